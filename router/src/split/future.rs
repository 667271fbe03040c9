use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use futures::future::Either;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::util::Oneshot;
use tower::Service;

use crate::stats::BackendStats;

pin_project! {
    /// Response future of [`Split`](crate::Split): the backend's future,
    /// timed and counted for the backend's statistics.
    pub struct ResponseFuture<S, Req>
    where
        S: Service<Req>,
    {
        #[pin]
        inner: Either<S::Future, Oneshot<S, Req>>,
        stats: Arc<BackendStats>,
        start: Option<Instant>,
    }
}

impl<S: Service<Req>, Req> std::fmt::Debug for ResponseFuture<S, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("start", &self.start)
            .finish_non_exhaustive()
    }
}

impl<S: Service<Req>, Req> ResponseFuture<S, Req> {
    pub(crate) fn called(fut: S::Future, stats: Arc<BackendStats>, timed: bool) -> Self {
        Self::new(Either::Left(fut), stats, timed)
    }

    pub(crate) fn oneshot(fut: Oneshot<S, Req>, stats: Arc<BackendStats>, timed: bool) -> Self {
        Self::new(Either::Right(fut), stats, timed)
    }

    fn new(
        inner: Either<S::Future, Oneshot<S, Req>>,
        stats: Arc<BackendStats>,
        timed: bool,
    ) -> Self {
        stats.on_dispatch();
        Self {
            inner,
            stats,
            start: timed.then(Instant::now),
        }
    }
}

impl<S, Req> Future for ResponseFuture<S, Req>
where
    S: Service<Req>,
{
    type Output = Result<S::Response, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        this.stats
            .on_complete(out.is_ok(), this.start.map(|s| s.elapsed()));
        Poll::Ready(out)
    }
}
