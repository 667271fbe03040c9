use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use pin_project_lite::pin_project;

use super::service::{ReplicaLoad, SetCounters};

/// Decrements the replica's in-flight count when the request ends (completed,
/// failed or dropped).
struct InFlight {
    load: Arc<ReplicaLoad>,
    counters: Arc<SetCounters>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.load.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.counters.completions.fetch_add(1, Ordering::Relaxed);
    }
}

pin_project! {
    /// Response future of a [`Replica`](crate::replica_set::Replica).
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<InFlight>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, load: Arc<ReplicaLoad>, counters: Arc<SetCounters>) -> Self {
        Self {
            inner,
            guard: Some(InFlight { load, counters }),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("done", &self.guard.is_none())
            .finish_non_exhaustive()
    }
}

impl<F: Future> Future for ResponseFuture<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        this.guard.take();
        Poll::Ready(out)
    }
}
