//! Endpoints from DNS SRV records (feature `dns`): a Kubernetes headless
//! Service (`_http._tcp.NAME.NAMESPACE.svc.cluster.local`) or any SRV name.
//!
//! [`DnsSource`] resolves the name every `interval` (hickory-resolver,
//! without a cache, so each round sees the current answer), maps each SRV
//! record to an endpoint (`id` = `target:port`, `addr` = the target's
//! address from the answer's additional records or a lookup, the
//! configured `version`, `Ready`: a headless Service lists only ready
//! pods) and yields the differences from the previous round. A name that
//! does not exist or has no records is an empty set; a failed lookup
//! (timeout, server failure) is reported and the set kept.

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use futures::StreamExt;
use hickory_resolver::config::{NameServerConfigGroup, ResolverConfig, ResolverOpts};
use hickory_resolver::name_server::TokioConnectionProvider;
use hickory_resolver::{ResolveError, Resolver, TokioResolver};
use tokio::sync::mpsc;

use super::{ChangeStream, EndpointSource, SourceError};
use crate::endpoint::{Endpoint, EndpointTable};
use crate::error::ConfigError;

/// The SRV name to follow and how.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// The SRV name (a trailing dot makes it absolute).
    pub name: String,
    /// The model version the endpoints serve (one headless Service per
    /// version).
    pub version: String,
    /// Time between two resolutions.
    pub interval: Duration,
    /// Bound on one query.
    pub timeout: Duration,
    /// Name servers to ask (UDP); `None` reads the system's
    /// `/etc/resolv.conf`.
    pub name_servers: Option<Vec<SocketAddr>>,
}

impl DnsConfig {
    /// Follows `name` every 5 s with the system's resolver settings.
    pub fn new(name: impl Into<String>, version: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            version: version.into(),
            interval: Duration::from_secs(5),
            timeout: Duration::from_secs(2),
            name_servers: None,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.name.trim_end_matches('.').is_empty() {
            return Err(ConfigError::new("name", "must not be empty"));
        }
        if self.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be positive"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be positive"));
        }
        if self.name_servers.as_ref().is_some_and(Vec::is_empty) {
            return Err(ConfigError::new(
                "name_servers",
                "name at least one, or none for the system's",
            ));
        }
        Ok(())
    }
}

/// Endpoints from an SRV name (see the [module docs](self)).
#[derive(Debug)]
pub struct DnsSource {
    config: DnsConfig,
    resolver: TokioResolver,
}

impl DnsSource {
    /// Checks `config` and builds the resolver.
    pub fn new(config: DnsConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let builder = match &config.name_servers {
            Some(servers) => {
                let mut group = NameServerConfigGroup::new();
                for s in servers {
                    group.merge(NameServerConfigGroup::from_ips_clear(
                        &[s.ip()],
                        s.port(),
                        true,
                    ));
                }
                Resolver::builder_with_config(
                    ResolverConfig::from_parts(None, vec![], group),
                    TokioConnectionProvider::default(),
                )
            }
            None => Resolver::builder_tokio()
                .map_err(|e| ConfigError::new("name_servers", format!("system resolver: {e}")))?,
        };
        let mut opts = ResolverOpts::default();
        opts.timeout = config.timeout;
        opts.attempts = 1;
        opts.cache_size = 0;
        let resolver = builder.with_options(opts).build();
        Ok(Self { config, resolver })
    }
}

/// The name does not exist or has no SRV records (NXDOMAIN or an empty
/// NOERROR answer), as opposed to a server that failed (SERVFAIL, REFUSED,
/// a timeout).
fn no_such_records(e: &ResolveError) -> bool {
    use hickory_resolver::proto::op::ResponseCode;
    use hickory_resolver::proto::ProtoErrorKind;
    matches!(
        e.proto().map(|p| p.kind()),
        Some(ProtoErrorKind::NoRecordsFound { response_code, .. })
            if *response_code == ResponseCode::NXDomain || *response_code == ResponseCode::NoError
    )
}

/// One round: the endpoints the name resolves to now.
async fn resolve(
    resolver: &TokioResolver,
    config: &DnsConfig,
) -> Result<Vec<Endpoint>, ResolveError> {
    let srv = match resolver.srv_lookup(config.name.as_str()).await {
        Ok(srv) => srv,
        Err(e) if no_such_records(&e) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    // Addresses that came with the answer, by name.
    let additional: Vec<(String, IpAddr)> = srv
        .as_lookup()
        .record_iter()
        .filter_map(|r| {
            let ip = r.data().ip_addr()?;
            Some((r.name().to_ascii().to_lowercase(), ip))
        })
        .collect();
    let mut endpoints = Vec::new();
    for record in srv.iter() {
        let target = record.target().to_ascii().to_lowercase();
        let ip = match additional.iter().find(|(name, _)| *name == target) {
            Some((_, ip)) => *ip,
            None => match resolver.lookup_ip(record.target().clone()).await {
                Ok(ips) => match ips.iter().next() {
                    Some(ip) => ip,
                    None => continue,
                },
                // A target without an address is skipped this round.
                Err(_) => continue,
            },
        };
        let id = format!("{}:{}", target.trim_end_matches('.'), record.port());
        endpoints.push(Endpoint::ready(
            id,
            SocketAddr::new(ip, record.port()),
            config.version.clone(),
        ));
    }
    Ok(endpoints)
}

async fn run(source: DnsSource, tx: mpsc::Sender<Result<crate::Change, SourceError>>) {
    let mut table = EndpointTable::new();
    let mut tick = tokio::time::interval(source.config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = tx.closed() => return,
        }
        let items: Vec<Result<crate::Change, SourceError>> =
            match resolve(&source.resolver, &source.config).await {
                Ok(endpoints) => table.replace(endpoints).into_iter().map(Ok).collect(),
                Err(e) => vec![Err(SourceError::new("dns", e))],
            };
        for item in items {
            if tx.send(item).await.is_err() {
                return;
            }
        }
    }
}

impl EndpointSource for DnsSource {
    fn changes(self) -> ChangeStream {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(self, tx));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .boxed()
    }
}
