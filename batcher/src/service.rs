//! The request-level service.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::TryAcquireError;
use tower::{BoxError, Service};

use crate::config::OverflowPolicy;
use crate::error::{Closed, QueueFull};
use crate::future::ResponseFuture;
use crate::handle::BatchHandle;
use crate::shared::Shared;
use crate::stats::Rejection;

type Acquire = Pin<Box<dyn Future<Output = Result<(), Closed>> + Send + Sync>>;

/// A request-level service in front of a batch service.
///
/// Created by [`BatchLayer`](crate::BatchLayer) or [`batch_fn`](crate::batch_fn).
/// Each call queues one request; the worker groups queued requests into
/// batches and answers each caller with its own result. Clones share the
/// queue; a clone does not inherit the queue slot reserved by `poll_ready`.
pub struct Batch<Req, Resp> {
    shared: Arc<Shared<Req, Resp>>,
    reject: bool,
    /// A queue slot reserved by `poll_ready`, consumed by `call`.
    reserved: bool,
    /// Waiting for a slot when the fast path found none.
    acquire: Option<Acquire>,
}

impl<Req, Resp> Batch<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    pub(crate) fn new(shared: Arc<Shared<Req, Resp>>, overflow: OverflowPolicy) -> Self {
        Self {
            shared,
            reject: overflow == OverflowPolicy::Reject,
            reserved: false,
            acquire: None,
        }
    }

    /// A handle to change this batcher's settings live, close it, and read
    /// its statistics.
    pub fn handle(&self) -> BatchHandle {
        BatchHandle::new(self.shared.clone())
    }
}

impl<Req, Resp> Clone for Batch<Req, Resp> {
    fn clone(&self) -> Self {
        self.shared.control.senders.fetch_add(1, Ordering::Relaxed);
        Self {
            shared: self.shared.clone(),
            reject: self.reject,
            reserved: false,
            acquire: None,
        }
    }
}

impl<Req, Resp> Drop for Batch<Req, Resp> {
    fn drop(&mut self) {
        let control = &self.shared.control;
        if self.reserved {
            control.release_permits(1);
        }
        if control.senders.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Last request handle: the worker drains and ends.
            control.closing.store(true, Ordering::Release);
            control.worker.wake();
        }
    }
}

impl<Req, Resp> fmt::Debug for Batch<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("name", &self.shared.control.name)
            .field("reserved", &self.reserved)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Service<Req> for Batch<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Response = Resp;
    type Error = BoxError;
    type Future = ResponseFuture<Resp>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.reserved {
            // A slot reserved before the batcher closed is no use: the call
            // would only fail. Say so now, so a balancer drops this replica
            // before it routes a request here.
            if self.shared.control.semaphore.is_closed() {
                self.reserved = false;
                self.shared.control.release_permits(1);
                return Poll::Ready(Err(Closed::new().into()));
            }
            return Poll::Ready(Ok(()));
        }
        if self.reject {
            return if self.shared.control.semaphore.is_closed() {
                Poll::Ready(Err(Closed::new().into()))
            } else {
                Poll::Ready(Ok(()))
            };
        }
        loop {
            if let Some(acquire) = &mut self.acquire {
                let result = std::task::ready!(acquire.as_mut().poll(cx));
                self.acquire = None;
                return match result {
                    Ok(()) => {
                        self.reserved = true;
                        Poll::Ready(Ok(()))
                    }
                    Err(closed) => Poll::Ready(Err(closed.into())),
                };
            }
            match self.shared.control.semaphore.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    self.reserved = true;
                    return Poll::Ready(Ok(()));
                }
                Err(TryAcquireError::Closed) => return Poll::Ready(Err(Closed::new().into())),
                Err(TryAcquireError::NoPermits) => {
                    let shared = self.shared.clone();
                    self.acquire = Some(Box::pin(async move {
                        match shared.control.semaphore.acquire().await {
                            Ok(permit) => {
                                permit.forget();
                                Ok(())
                            }
                            Err(_) => Err(Closed::new()),
                        }
                    }));
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        assert!(
            self.reject || self.reserved,
            "poll_ready must be called first"
        );
        let (item, rx) = self.shared.prepare(req);
        if self.reject {
            match self.shared.control.semaphore.try_acquire() {
                Ok(permit) => permit.forget(),
                Err(err) => {
                    let control = &self.shared.control;
                    return match err {
                        TryAcquireError::NoPermits => {
                            control
                                .stats
                                .reject(Rejection::QueueFull, &control.telemetry);
                            ResponseFuture::failed(QueueFull::new().into())
                        }
                        TryAcquireError::Closed => {
                            control.stats.reject(Rejection::Closed, &control.telemetry);
                            ResponseFuture::failed(Closed::new().into())
                        }
                    };
                }
            }
        } else {
            self.reserved = false;
        }
        self.shared.push(item, rx)
    }
}
