use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::BoxError;

use crate::gate::SlotPermit;

pin_project! {
    /// Response future of [`GpuShare`](crate::GpuShare): holds the compute
    /// slot until the inner future completes or is dropped.
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        permit: Option<SlotPermit>,
    }
}

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, permit: SlotPermit) -> Self {
        Self {
            inner,
            permit: Some(permit),
        }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("holds_slot", &self.permit.is_some())
            .finish()
    }
}

impl<F, T, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<T, E>>,
    E: Into<BoxError>,
{
    type Output = Result<T, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        // The batch is done with the device: hand the slot on now rather
        // than when the caller gets around to dropping the future.
        this.permit.take();
        Poll::Ready(out.map_err(Into::into))
    }
}
