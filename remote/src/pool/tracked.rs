//! [`Tracked`]: an endpoint's client service that reports consecutive
//! failures to the pool.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::sync::mpsc;
use tower::{BoxError, Service};

/// A failure report: the endpoint crossed its threshold (or its service
/// failed in `poll_ready`).
#[derive(Debug)]
pub(crate) struct Report {
    pub(crate) id: String,
    pub(crate) generation: u64,
}

/// One endpoint's client service inside a balancer: counts consecutive
/// failed calls and reports the endpoint for ejection when they reach the
/// pool's `eject_after`. A successful call resets the count.
///
/// From the failure that trips it, the service also fails its own
/// `poll_ready` with [`Ejected`]: the balancer drops it before it picks
/// again, so a retry of the failed request cannot land on it while the
/// pool's worker catches up.
#[derive(Debug)]
pub struct Tracked<S> {
    inner: S,
    id: String,
    generation: u64,
    failures: Arc<AtomicU32>,
    tripped: Arc<AtomicBool>,
    eject_after: u32,
    reports: mpsc::UnboundedSender<Report>,
}

/// The endpoint was ejected after consecutive failures.
#[derive(Debug)]
pub struct Ejected {
    id: String,
}

impl fmt::Display for Ejected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "endpoint {} ejected after consecutive failures", self.id)
    }
}

impl std::error::Error for Ejected {}

impl<S> Tracked<S> {
    pub(crate) fn new(
        inner: S,
        id: String,
        generation: u64,
        eject_after: u32,
        reports: mpsc::UnboundedSender<Report>,
    ) -> Self {
        Self {
            inner,
            id,
            generation,
            failures: Arc::new(AtomicU32::new(0)),
            tripped: Arc::new(AtomicBool::new(false)),
            eject_after,
            reports,
        }
    }

    /// The endpoint's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    fn report(&self) {
        let _ = self.reports.send(Report {
            id: self.id.clone(),
            generation: self.generation,
        });
    }
}

impl<S, Req> Service<Req> for Tracked<S>
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
        if self.tripped.load(Ordering::Acquire) {
            return Poll::Ready(Err(Ejected {
                id: self.id.clone(),
            }
            .into()));
        }
        match self.inner.poll_ready(cx) {
            Poll::Ready(Err(e)) => {
                // The balancer drops a service that fails here; the pool
                // ejects the endpoint so that a probe can bring it back.
                self.report();
                Poll::Ready(Err(e.into()))
            }
            other => other.map_err(Into::into),
        }
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let fut = self.inner.call(req);
        let failures = self.failures.clone();
        let tripped = self.tripped.clone();
        let eject_after = self.eject_after;
        let reporter = (self.reports.clone(), self.id.clone(), self.generation);
        async move {
            let result = fut.await.map_err(Into::into);
            match &result {
                Ok(_) => failures.store(0, Ordering::Relaxed),
                Err(_) => {
                    if failures.fetch_add(1, Ordering::Relaxed) + 1 >= eject_after
                        && !tripped.swap(true, Ordering::AcqRel)
                    {
                        let (reports, id, generation) = reporter;
                        let _ = reports.send(Report { id, generation });
                    }
                }
            }
            result
        }
        .boxed()
    }
}
