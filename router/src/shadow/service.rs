use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower::{Service, ServiceExt};

use super::compare::{Compare, ShadowError};
use super::future::ResponseFuture;
use super::shared::{ShadowStats, Shared};

/// Sends every request to the primary service and mirrors a fraction to a
/// shadow service on a spawned task. Built by [`ShadowLayer`](super::ShadowLayer).
pub struct Shadow<P, T, Req, H> {
    primary: P,
    shadow: T,
    shared: Arc<Shared<Req>>,
    hook: Arc<H>,
    _req: PhantomData<fn(Req)>,
}

impl<P: Clone, T: Clone, Req, H> Clone for Shadow<P, T, Req, H> {
    fn clone(&self) -> Self {
        Self {
            primary: self.primary.clone(),
            shadow: self.shadow.clone(),
            shared: self.shared.clone(),
            hook: self.hook.clone(),
            _req: PhantomData,
        }
    }
}

impl<P: fmt::Debug, T, Req, H> fmt::Debug for Shadow<P, T, Req, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shadow")
            .field("primary", &self.primary)
            .field("name", &self.shared.name)
            .finish_non_exhaustive()
    }
}

impl<P, T, Req, H> Shadow<P, T, Req, H> {
    pub(crate) fn new(primary: P, shadow: T, shared: Arc<Shared<Req>>, hook: Arc<H>) -> Self {
        Self {
            primary,
            shadow,
            shared,
            hook,
            _req: PhantomData,
        }
    }

    /// Counters shared by every service of the same layer.
    pub fn stats(&self) -> ShadowStats {
        self.shared.stats()
    }
}

impl<P, T, Req, H> Service<Req> for Shadow<P, T, Req, H>
where
    P: Service<Req>,
    T: Service<Req> + Clone + Send + 'static,
    T::Future: Send,
    T::Response: Send + 'static,
    T::Error: fmt::Display,
    Req: Send + 'static,
    H: Compare<Result<P::Response, P::Error>, T::Response>,
{
    type Response = P::Response;
    type Error = P::Error;
    type Future = ResponseFuture<P::Future, H, Result<P::Response, P::Error>, T::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Only the primary's readiness matters; the shadow is driven on its task.
        self.primary.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let Some(permit) = self.shared.admit() else {
            return ResponseFuture::new(self.primary.call(req), None, self.hook.clone());
        };
        let copy = (self.shared.cloner)(&req);
        let fut = self.primary.call(req);
        let (tx, rx) = if self.hook.wants_primary() {
            let (tx, rx) = oneshot::channel::<H::Kept>();
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let shadow = self.shadow.clone();
        let shared = self.shared.clone();
        let hook = self.hook.clone();
        shared.count("mirrored", &shared.counters.mirrored);
        tokio::spawn(async move {
            let result: Result<T::Response, ShadowError> =
                match tokio::time::timeout(shared.timeout, shadow.oneshot(copy)).await {
                    Ok(Ok(rsp)) => {
                        shared.count("completed", &shared.counters.completed);
                        Ok(rsp)
                    }
                    Ok(Err(e)) => {
                        shared.count("failed", &shared.counters.failed);
                        Err(ShadowError::failed(e.to_string()))
                    }
                    Err(_elapsed) => {
                        shared.count("timed_out", &shared.counters.timed_out);
                        Err(ShadowError::timed_out())
                    }
                };
            drop(permit);
            if let Some(rx) = rx {
                // The primary may have been cancelled: then there is nothing to compare.
                if let Ok(kept) = rx.await {
                    hook.compare(kept, result);
                }
            }
        });
        ResponseFuture::new(fut, tx, self.hook.clone())
    }
}
