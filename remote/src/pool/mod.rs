//! A source's endpoints as one balancer per model version, with outlier
//! ejection, health probes and draining.
//!
//! The [`Pool`] worker follows an [`EndpointSource`]
//! and keeps, for every version a balancer was asked for, the set of
//! endpoints that take new requests: **ready** (not draining) and **not
//! ejected**. Each member reaches convoy-router's [`Balancer`] (power of two
//! choices over a changing set) as a [`Tracked`] client service made by a
//! [`Connect`]:
//!
//! * **Ejection**: `eject_after` consecutive failed calls, or one failed
//!   health probe, remove the endpoint from its balancers at once. Ejected
//!   endpoints are probed every `probe_interval`; the first successful probe
//!   puts a fresh service back.
//! * **Draining**: an endpoint announced `Draining` (or removed) leaves its
//!   balancers at once, so it gets no new request; requests already sent to
//!   it own their response futures and finish.
//!
//! One balancer per version means convoy-router's `Split` and `Rollout`
//! pick between versions over remote nodes exactly as over local replicas.

mod config;
mod tracked;
mod worker;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use convoy_router::balance::{BalanceConfig, Balancer};
use futures::future::BoxFuture;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tower::discover::Change as DiscoverChange;
use tower::{BoxError, Service};

use crate::connect::Connect;
use crate::endpoint::Endpoint;
use crate::error::ConfigError;
use crate::source::EndpointSource;

pub use self::config::PoolConfig;
pub use self::tracked::{Ejected, Tracked};

/// Checks an endpoint's health: `true` when it can take requests.
pub trait Probe: Send + Sync + 'static {
    /// Probes `endpoint` once (the pool bounds the wait with its
    /// `probe_timeout`).
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<'static, bool>;
}

impl<F, Fut> Probe for F
where
    F: Fn(&Endpoint) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send + 'static,
{
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<'static, bool> {
        Box::pin(self(endpoint))
    }
}

/// What the pool knows about one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointStatus {
    /// The endpoint as its source last announced it.
    pub endpoint: Endpoint,
    /// Removed after failures or a failed probe, waiting for a probe to pass.
    pub ejected: bool,
    /// In its version's balancers (ready and not ejected).
    pub serving: bool,
}

/// The changes one balancer sees.
pub type VersionDiscover<S> =
    futures::stream::BoxStream<'static, Result<DiscoverChange<String, Tracked<S>>, Infallible>>;

pub(crate) enum Command<S> {
    Subscribe {
        version: String,
        tx: mpsc::UnboundedSender<DiscoverChange<String, Tracked<S>>>,
    },
}

/// Follows a source and feeds one balancer per version (see the
/// [module docs](self)). Clones share the worker; it stops when every
/// clone and every balancer made from it are dropped.
#[derive(Debug)]
pub struct Pool<S> {
    cmds: mpsc::UnboundedSender<Command<S>>,
    status: Arc<Mutex<BTreeMap<String, EndpointStatus>>>,
}

impl<S> Clone for Pool<S> {
    fn clone(&self) -> Self {
        Self {
            cmds: self.cmds.clone(),
            status: self.status.clone(),
        }
    }
}

impl<S> std::fmt::Debug for Command<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Command::Subscribe { version, .. } => f
                .debug_struct("Subscribe")
                .field("version", version)
                .finish(),
        }
    }
}

impl<S: Send + 'static> Pool<S> {
    /// Starts the worker on the current tokio runtime.
    pub fn new<Src, C, P>(
        source: Src,
        connector: C,
        probe: P,
        config: PoolConfig,
    ) -> Result<Self, ConfigError>
    where
        Src: EndpointSource,
        C: Connect<Service = S>,
        P: Probe,
    {
        config.validate()?;
        let (cmds, rx) = mpsc::unbounded_channel();
        let status = Arc::new(Mutex::new(BTreeMap::new()));
        let worker = worker::Worker::new(connector, probe, config, status.clone());
        tokio::spawn(worker.run(source.changes(), rx));
        Ok(Self { cmds, status })
    }

    /// The membership changes of `version`'s endpoints, as a
    /// `tower::discover::Discover` stream: every current member first,
    /// then each change.
    pub fn discover(&self, version: impl Into<String>) -> VersionDiscover<S> {
        let (tx, rx) = mpsc::unbounded_channel();
        let _ = self.cmds.send(Command::Subscribe {
            version: version.into(),
            tx,
        });
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|c| (Ok(c), rx)) },
        )
        .boxed()
    }

    /// A power-of-two-choices balancer over `version`'s endpoints.
    pub fn balancer<Req>(
        &self,
        version: impl Into<String>,
        config: BalanceConfig,
    ) -> Result<Balancer<Req, S::Response>, ConfigError>
    where
        Req: Send + 'static,
        S: Service<Req>,
        S::Response: Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        Balancer::new(self.discover(version), config)
            .map_err(|e| ConfigError::new("balance", e.to_string()))
    }

    /// Every known endpoint and its state, by id.
    pub fn endpoints(&self) -> Vec<EndpointStatus> {
        self.status.lock().values().cloned().collect()
    }

    /// How many of `version`'s endpoints take new requests now (ready,
    /// not ejected), without copying the list.
    pub fn serving(&self, version: &str) -> usize {
        self.status
            .lock()
            .values()
            .filter(|s| s.serving && s.endpoint.version == version)
            .count()
    }
}

#[cfg(test)]
mod tests;
