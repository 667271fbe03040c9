use std::convert::Infallible;
use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::Stream;
use tower::discover::Change;

use super::service::{Replica, ReplicaId};
use super::set::{replica_for, Shared};

/// The [`tower::discover::Discover`] stream of a [`ReplicaSet`](crate::ReplicaSet).
///
/// Yields `Change::Insert` when a replica becomes ready and `Change::Remove`
/// when the set removes an announced replica. It never ends; removals come
/// before insertions so a balancer never holds more replicas than needed.
pub struct ReplicaDiscover<S> {
    shared: Arc<Shared<S>>,
}

impl<S> ReplicaDiscover<S> {
    pub(crate) fn new(shared: Arc<Shared<S>>) -> Self {
        Self { shared }
    }
}

impl<S> fmt::Debug for ReplicaDiscover<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReplicaDiscover").finish_non_exhaustive()
    }
}

impl<S> Unpin for ReplicaDiscover<S> {}

impl<S> Stream for ReplicaDiscover<S> {
    type Item = Result<Change<ReplicaId, Replica<S>>, Infallible>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let shared = &self.shared;
        let mut state = shared.state.lock();
        if let Some(id) = state.removals.pop_front() {
            return Poll::Ready(Some(Ok(Change::Remove(id))));
        }
        for r in state.ready.iter_mut() {
            if let Some(service) = r.service.take() {
                let replica = replica_for(shared, r.id, service, Arc::clone(&r.load));
                return Poll::Ready(Some(Ok(Change::Insert(r.id, replica))));
            }
        }
        match &state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            _ => state.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}
