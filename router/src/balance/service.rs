use std::fmt;
use std::hash::Hash;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::Stream;
use tower::balance::p2c::Balance;
use tower::buffer::Buffer;
use tower::discover::Change;
use tower::load::{CompleteOnResponse, PeakEwmaDiscover, PendingRequestsDiscover};
use tower::util::BoxService;
use tower::{BoxError, Service};

use super::config::{BalanceConfig, LoadMetric};
use super::fail_fast::FailFast;
use crate::error::ConfigError;

type Inner<Req, Rsp> = Buffer<Req, BoxFuture<'static, Result<Rsp, BoxError>>>;

/// A `Clone` power-of-two-choices balancer over a `Discover` stream of
/// replicas (anything implementing `tower::discover::Discover`) that fails fast with [`NoReadyReplica`](super::NoReadyReplica).
pub struct Balancer<Req, Rsp> {
    inner: Inner<Req, Rsp>,
}

impl<Req, Rsp> Clone for Balancer<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<Req, Rsp> fmt::Debug for Balancer<Req, Rsp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer").finish_non_exhaustive()
    }
}

impl<Req, Rsp> Balancer<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    /// Starts the balancer's worker on the current tokio runtime.
    ///
    /// `discover` yields `Change::Insert(key, replica)` and
    /// `Change::Remove(key)`; the balancer keeps polling it for the life of
    /// the worker.
    pub fn new<D, K, S, E>(discover: D, config: BalanceConfig) -> Result<Self, ConfigError>
    where
        D: Stream<Item = Result<Change<K, S>, E>> + Send + 'static,
        K: Hash + Eq + Clone + Send + 'static,
        E: Into<BoxError>,
        S: Service<Req, Response = Rsp> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
    {
        config.validate()?;
        let discover = Box::pin(discover);
        let service: BoxService<Req, Rsp, BoxError> = match config.load {
            LoadMetric::PeakEwma { default_rtt, decay } => {
                let d = PeakEwmaDiscover::new::<Req>(
                    discover,
                    default_rtt,
                    decay,
                    CompleteOnResponse::default(),
                );
                BoxService::new(FailFast::new(Balance::new(d), config.ready_timeout))
            }
            LoadMetric::PendingRequests => {
                let d =
                    PendingRequestsDiscover::new::<Req>(discover, CompleteOnResponse::default());
                BoxService::new(FailFast::new(Balance::new(d), config.ready_timeout))
            }
        };
        Ok(Self {
            inner: Buffer::new(service, config.buffer_capacity),
        })
    }
}

impl<Req, Rsp> Service<Req> for Balancer<Req, Rsp>
where
    Req: Send + 'static,
    Rsp: Send + 'static,
{
    type Response = Rsp;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Rsp, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        Box::pin(self.inner.call(req))
    }
}
