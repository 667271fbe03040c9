use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tokio::sync::oneshot;

use super::compare::Compare;

pin_project! {
    /// Response future of [`Shadow`](super::Shadow): the primary's future
    /// (`PR` is its output);
    /// on completion it hands what the hook keeps to the shadow's task.
    pub struct ResponseFuture<F, H, PR, SR>
    where
        H: Compare<PR, SR>,
    {
        #[pin]
        inner: F,
        tx: Option<oneshot::Sender<H::Kept>>,
        hook: Arc<H>,
    }
}

impl<F, H: Compare<PR, SR>, PR, SR> fmt::Debug for ResponseFuture<F, H, PR, SR> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("mirrored_with_compare", &self.tx.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, H: Compare<PR, SR>, PR, SR> ResponseFuture<F, H, PR, SR> {
    pub(crate) fn new(inner: F, tx: Option<oneshot::Sender<H::Kept>>, hook: Arc<H>) -> Self {
        Self { inner, tx, hook }
    }
}

impl<F, H, PR, SR> Future for ResponseFuture<F, H, PR, SR>
where
    F: Future<Output = PR>,
    H: Compare<PR, SR>,
{
    type Output = PR;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let Some(tx) = this.tx.take() {
            if let Some(kept) = this.hook.keep(&out) {
                // The shadow task may be gone (timed out): nothing to do then.
                let _ = tx.send(kept);
            }
        }
        Poll::Ready(out)
    }
}
