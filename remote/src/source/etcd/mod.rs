//! Endpoints registered in etcd (feature `etcd`).
//!
//! A node announces itself with a [`Registration`]: a lease with a TTL,
//! kept alive from a background task, and one key, `prefix + id`, whose
//! value is the [`Endpoint`](crate::Endpoint) as JSON, written under that
//! lease. When the node dies the keep-alives stop and etcd deletes the key
//! when the lease expires; a node that shuts down in order marks itself
//! draining, then revokes the lease ([`Registration::deregister`]).
//!
//! An [`EtcdSource`] lists the prefix, then watches it from the revision
//! after the list. When the watch breaks (etcd restarted, a partition, a
//! compaction) it reports a [`SourceError`](crate::SourceError), waits a
//! bounded backoff, lists again and yields only the differences, then
//! watches from the new revision: nothing is missed and nothing is
//! announced twice.
//!
//! The client is generated from the part of etcd's v3 API used here
//! (`proto/etcd.proto`: KV, Watch, Lease) by tonic, with a vendored
//! `protoc`.

mod client;
mod register;
mod watch;

use std::time::Duration;

use crate::error::ConfigError;

pub use self::client::EtcdError;
pub use self::register::Registration;
pub use self::watch::EtcdSource;

/// Where etcd is and where endpoints live in it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// Client URLs (`http://host:2379`); requests are balanced over them.
    pub endpoints: Vec<String>,
    /// Key prefix under which every endpoint has one key (`prefix + id`).
    pub prefix: String,
    /// Bound on establishing a connection.
    pub connect_timeout: Duration,
    /// Bound on one request (a list, a put, a keep-alive).
    pub request_timeout: Duration,
    /// Longest wait between two attempts after a failure (the wait doubles
    /// from 50 ms up to this).
    pub max_backoff: Duration,
}

impl EtcdConfig {
    /// etcd at `endpoint` (a client URL), endpoints under `prefix`.
    pub fn new(endpoint: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            endpoints: vec![endpoint.into()],
            prefix: prefix.into(),
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(2),
        }
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.endpoints.is_empty() {
            return Err(ConfigError::new(
                "endpoints",
                "at least one etcd URL is needed",
            ));
        }
        for url in &self.endpoints {
            let uri: http::Uri = url
                .parse()
                .map_err(|e| ConfigError::new("endpoints", format!("{url:?}: {e}")))?;
            if uri.scheme().is_none() || uri.host().is_none() {
                return Err(ConfigError::new(
                    "endpoints",
                    format!("{url:?} is not an absolute URL like http://127.0.0.1:2379"),
                ));
            }
        }
        if self.prefix.is_empty() {
            return Err(ConfigError::new("prefix", "must not be empty"));
        }
        for (field, d) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
            ("max_backoff", self.max_backoff),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be positive"));
            }
        }
        Ok(())
    }
}

/// Doubling waits from 50 ms up to a bound.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(50);

    pub(crate) fn new(max: Duration) -> Self {
        Self {
            next: Self::FIRST.min(max),
            max,
        }
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST.min(self.max);
    }

    pub(crate) fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_configuration_names_the_field() {
        let mut c = EtcdConfig::new("127.0.0.1:2379", "/convoy/");
        assert_eq!(c.validate().unwrap_err().field(), "endpoints");
        c.endpoints = vec!["http://127.0.0.1:2379".into()];
        assert!(c.validate().is_ok());
        c.prefix.clear();
        assert_eq!(c.validate().unwrap_err().field(), "prefix");
        c.prefix = "/p/".into();
        c.max_backoff = Duration::ZERO;
        assert_eq!(c.validate().unwrap_err().field(), "max_backoff");
    }

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(300));
        let waits: Vec<u64> = (0..5).map(|_| b.next_wait().as_millis() as u64).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        b.reset();
        assert_eq!(b.next_wait(), Duration::from_millis(50));
    }
}
