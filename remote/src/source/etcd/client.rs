//! The generated etcd v3 client and the few calls convoy makes.

use std::fmt;
use std::time::Duration;

use futures::stream;
use tonic::transport::{Channel, Endpoint as TonicEndpoint};
use tower::BoxError;

use super::EtcdConfig;
use crate::endpoint::Endpoint;
use crate::error::ConfigError;

#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all
)]
pub(crate) mod pb {
    tonic::include_proto!("etcdserverpb");
}

use pb::kv_client::KvClient;
use pb::lease_client::LeaseClient;
use pb::watch_client::WatchClient;

/// An etcd request failed (connection refused, timeout, an error status,
/// an unexpected answer).
#[derive(Debug)]
pub struct EtcdError {
    what: &'static str,
    inner: BoxError,
}

impl EtcdError {
    pub(crate) fn new(what: &'static str, inner: impl Into<BoxError>) -> Self {
        Self {
            what,
            inner: inner.into(),
        }
    }
}

impl fmt::Display for EtcdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "etcd {}: {}", self.what, self.inner)
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.inner)
    }
}

/// One connection (lazily made, remade after a failure) to etcd.
#[derive(Clone, Debug)]
pub(crate) struct Client {
    channel: Channel,
    pub(crate) prefix: String,
    pub(crate) request_timeout: Duration,
}

impl Client {
    pub(crate) fn new(config: &EtcdConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let endpoints = config
            .endpoints
            .iter()
            .map(|url| {
                TonicEndpoint::from_shared(url.clone())
                    .map(|e| {
                        e.connect_timeout(config.connect_timeout)
                            // A silent peer (a partition) is noticed within
                            // a few seconds, not at the next TCP timeout.
                            .http2_keep_alive_interval(Duration::from_secs(2))
                            .keep_alive_timeout(config.request_timeout)
                            .keep_alive_while_idle(true)
                    })
                    .map_err(|e| ConfigError::new("endpoints", format!("{url:?}: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let channel = match endpoints.len() {
            1 => endpoints[0].connect_lazy(),
            _ => Channel::balance_list(endpoints.into_iter()),
        };
        Ok(Self {
            channel,
            prefix: config.prefix.clone(),
            request_timeout: config.request_timeout,
        })
    }

    pub(crate) fn key(&self, id: &str) -> Vec<u8> {
        format!("{}{}", self.prefix, id).into_bytes()
    }

    /// The id in a key under the prefix.
    pub(crate) fn id_of<'k>(&self, key: &'k [u8]) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_bytes())
            .and_then(|id| std::str::from_utf8(id).ok())
            .filter(|id| !id.is_empty())
    }

    /// The end of the prefix's key range (etcd's `WithPrefix`).
    pub(crate) fn range_end(&self) -> Vec<u8> {
        let mut end = self.prefix.as_bytes().to_vec();
        while let Some(last) = end.pop() {
            if last < 0xff {
                end.push(last + 1);
                return end;
            }
        }
        vec![0] // every key
    }

    async fn bounded<T>(
        &self,
        what: &'static str,
        fut: impl std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, EtcdError> {
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(rsp)) => Ok(rsp.into_inner()),
            Ok(Err(status)) => Err(EtcdError::new(what, status)),
            Err(_) => Err(EtcdError::new(what, "timed out")),
        }
    }

    /// Every key under the prefix, and the revision of the answer.
    pub(crate) async fn list(&self) -> Result<(Vec<pb::KeyValue>, i64), EtcdError> {
        let req = pb::RangeRequest {
            key: self.prefix.clone().into_bytes(),
            range_end: self.range_end(),
            ..Default::default()
        };
        let rsp = self
            .bounded("range", KvClient::new(self.channel.clone()).range(req))
            .await?;
        let revision = rsp.header.map_or(0, |h| h.revision);
        Ok((rsp.kvs, revision))
    }

    pub(crate) async fn put(&self, endpoint: &Endpoint, lease: i64) -> Result<(), EtcdError> {
        let req = pb::PutRequest {
            key: self.key(&endpoint.id),
            value: serde_json::to_vec(endpoint).map_err(|e| EtcdError::new("put", e))?,
            lease,
        };
        self.bounded("put", KvClient::new(self.channel.clone()).put(req))
            .await
            .map(drop)
    }

    pub(crate) async fn grant(&self, ttl: Duration) -> Result<i64, EtcdError> {
        let req = pb::LeaseGrantRequest {
            ttl: ttl.as_secs().max(1) as i64,
            id: 0,
        };
        let rsp = self
            .bounded(
                "lease grant",
                LeaseClient::new(self.channel.clone()).lease_grant(req),
            )
            .await?;
        if !rsp.error.is_empty() {
            return Err(EtcdError::new("lease grant", rsp.error));
        }
        Ok(rsp.id)
    }

    pub(crate) async fn revoke(&self, lease: i64) -> Result<(), EtcdError> {
        self.bounded(
            "lease revoke",
            LeaseClient::new(self.channel.clone())
                .lease_revoke(pb::LeaseRevokeRequest { id: lease }),
        )
        .await
        .map(drop)
    }

    /// Renews `lease` once; returns the TTL left (0 when the lease is gone).
    pub(crate) async fn keep_alive(&self, lease: i64) -> Result<i64, EtcdError> {
        let fut = async {
            let mut rsp = LeaseClient::new(self.channel.clone())
                .lease_keep_alive(stream::iter([pb::LeaseKeepAliveRequest { id: lease }]))
                .await?
                .into_inner();
            match rsp.message().await? {
                Some(r) => Ok(r.ttl),
                None => Err(tonic::Status::unavailable("keep-alive stream closed")),
            }
        };
        match tokio::time::timeout(self.request_timeout, fut).await {
            Ok(Ok(ttl)) => Ok(ttl),
            Ok(Err(status)) => Err(EtcdError::new("lease keep-alive", status)),
            Err(_) => Err(EtcdError::new("lease keep-alive", "timed out")),
        }
    }

    /// Watches the prefix from `revision` on.
    pub(crate) async fn watch(
        &self,
        revision: i64,
    ) -> Result<tonic::Streaming<pb::WatchResponse>, EtcdError> {
        let create = pb::WatchRequest {
            request_union: Some(pb::watch_request::RequestUnion::CreateRequest(
                pb::WatchCreateRequest {
                    key: self.prefix.clone().into_bytes(),
                    range_end: self.range_end(),
                    start_revision: revision,
                    progress_notify: false,
                },
            )),
        };
        // The request stream stays open: etcd ends a watch whose client
        // closed its side.
        let requests = stream::StreamExt::chain(stream::iter([create]), stream::pending());
        self.bounded(
            "watch",
            WatchClient::new(self.channel.clone()).watch(requests),
        )
        .await
    }
}
