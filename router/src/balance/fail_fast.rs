//! Bounds how long the inner service may stay not ready.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::{BoxFuture, FutureExt};
use tokio::time::Sleep;
use tower::{BoxError, Service};

use super::error::NoReadyReplica;

/// Once the inner service has been pending for `bound`, reports ready and
/// fails the next call with [`NoReadyReplica`]; while it stays pending every
/// later call fails at once. The first time it is ready again, normal
/// service resumes. Runs inside the buffer worker, so errors from `call`
/// reach only the affected callers.
pub(crate) struct FailFast<S> {
    inner: S,
    bound: Duration,
    timer: Option<Pin<Box<Sleep>>>,
    failing: bool,
    shed_next: bool,
}

impl<S> FailFast<S> {
    pub(crate) fn new(inner: S, bound: Duration) -> Self {
        Self {
            inner,
            bound,
            timer: None,
            failing: false,
            shed_next: false,
        }
    }
}

impl<S, Req> Service<Req> for FailFast<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    S::Response: Send + 'static,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<S::Response, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.shed_next {
            return Poll::Ready(Ok(()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Ok(())) => {
                self.timer = None;
                self.failing = false;
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e.into())),
            Poll::Pending if self.failing => {
                self.shed_next = true;
                Poll::Ready(Ok(()))
            }
            Poll::Pending => {
                let bound = self.bound;
                let timer = self
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep(bound)));
                match timer.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        self.timer = None;
                        self.failing = true;
                        self.shed_next = true;
                        Poll::Ready(Ok(()))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        if std::mem::take(&mut self.shed_next) {
            return futures::future::ready(Err(NoReadyReplica::new().into())).boxed();
        }
        let fut = self.inner.call(req);
        async move { fut.await.map_err(Into::into) }.boxed()
    }
}
