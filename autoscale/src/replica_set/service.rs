use std::fmt;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use tower::load::Load;
use tower::Service;

use super::future::ResponseFuture;

/// Identifies a replica within its [`ReplicaSet`](crate::ReplicaSet); the key
/// of its [`Change`](tower::discover::Change)s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ReplicaId(pub(crate) u64);

impl ReplicaId {
    /// The numeric id (unique within the set, increasing with creation).
    pub fn get(self) -> u64 {
        self.0
    }
}

impl fmt::Display for ReplicaId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "replica-{}", self.0)
    }
}

/// Per-replica load, shared by the replica's service and the set.
#[derive(Debug, Default)]
pub(crate) struct ReplicaLoad {
    pub(crate) in_flight: AtomicUsize,
}

/// Set-wide counters since the last sample.
#[derive(Debug, Default)]
pub(crate) struct SetCounters {
    pub(crate) arrivals: AtomicU64,
    pub(crate) completions: AtomicU64,
}

/// One replica of a [`ReplicaSet`](crate::ReplicaSet), as handed to a balancer.
///
/// It forwards to the replica's service, counts its in-flight requests (its
/// [`Load`] metric, so `tower::balance::p2c` picks the less loaded of two) and
/// feeds the set's load samples. Dropping it (a balancer does so on
/// `Change::Remove`) does not cancel requests already in flight: their
/// response futures finish normally.
pub struct Replica<S> {
    id: ReplicaId,
    inner: S,
    load: Arc<ReplicaLoad>,
    counters: Arc<SetCounters>,
}

impl<S> Replica<S> {
    pub(crate) fn new(
        id: ReplicaId,
        inner: S,
        load: Arc<ReplicaLoad>,
        counters: Arc<SetCounters>,
    ) -> Self {
        Self {
            id,
            inner,
            load,
            counters,
        }
    }

    /// The replica's id.
    pub fn id(&self) -> ReplicaId {
        self.id
    }

    /// Requests in flight on this replica.
    pub fn in_flight(&self) -> usize {
        self.load.in_flight.load(Ordering::Acquire)
    }

    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S> fmt::Debug for Replica<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Replica")
            .field("id", &self.id)
            .field("in_flight", &self.in_flight())
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Replica<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        self.load.in_flight.fetch_add(1, Ordering::AcqRel);
        self.counters.arrivals.fetch_add(1, Ordering::Relaxed);
        let fut = self.inner.call(req);
        ResponseFuture::new(fut, Arc::clone(&self.load), Arc::clone(&self.counters))
    }
}

impl<S> Load for Replica<S> {
    type Metric = usize;

    fn load(&self) -> usize {
        self.in_flight()
    }
}
