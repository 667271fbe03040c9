//! The tower layer: samples requests and their responses through a
//! user-supplied feature extractor.

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use pin_project_lite::pin_project;
use tower::{Layer, Service};

use crate::monitor::{DriftHandle, Row, Ticket};

/// Turns a request and its response into a row of feature values (one per
/// reference column, in order). Called only for sampled requests.
pub trait Features<Req, Resp>: Send + Sync + 'static {
    /// Appends the request's features (the model's inputs).
    fn inputs(&self, request: &Req, row: &mut Row);
    /// Appends the response's features (the model's outputs).
    fn outputs(&self, response: &Resp, row: &mut Row);
}

/// Samples a service's traffic into a drift monitor.
#[derive(Debug)]
pub struct DriftLayer<F> {
    handle: DriftHandle,
    features: Arc<F>,
}

impl<F> Clone for DriftLayer<F> {
    fn clone(&self) -> Self {
        Self {
            handle: self.handle.clone(),
            features: self.features.clone(),
        }
    }
}

impl<F> DriftLayer<F> {
    /// A layer feeding `handle`'s monitor through `features`.
    pub fn new(handle: DriftHandle, features: F) -> Self {
        Self {
            handle,
            features: Arc::new(features),
        }
    }
}

impl<S, F> Layer<S> for DriftLayer<F> {
    type Service = DriftService<S, F>;

    fn layer(&self, inner: S) -> Self::Service {
        DriftService {
            inner,
            handle: self.handle.clone(),
            features: self.features.clone(),
        }
    }
}

/// The service [`DriftLayer`] makes.
#[derive(Debug)]
pub struct DriftService<S, F> {
    inner: S,
    handle: DriftHandle,
    features: Arc<F>,
}

impl<S: Clone, F> Clone for DriftService<S, F> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            handle: self.handle.clone(),
            features: self.features.clone(),
        }
    }
}

impl<S, F, Req> Service<Req> for DriftService<S, F>
where
    S: Service<Req>,
    F: Features<Req, S::Response>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = DriftFuture<S::Future, F, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let sampled = self.handle.ticket().map(|ticket| {
            let mut row = Row::new();
            self.features.inputs(&req, &mut row);
            Sampled {
                ticket,
                row,
                handle: self.handle.clone(),
                features: self.features.clone(),
            }
        });
        DriftFuture {
            inner: self.inner.call(req),
            sampled,
            _req: PhantomData,
        }
    }
}

struct Sampled<F> {
    ticket: Ticket,
    row: Row,
    handle: DriftHandle,
    features: Arc<F>,
}

pin_project! {
    /// The response future of [`DriftService`].
    pub struct DriftFuture<Fut, F, Req> {
        #[pin]
        inner: Fut,
        sampled: Option<Sampled<F>>,
        _req: PhantomData<fn(Req)>,
    }
}

impl<Fut, F, Req> std::fmt::Debug for DriftFuture<Fut, F, Req> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftFuture")
            .field("sampled", &self.sampled.is_some())
            .finish()
    }
}

impl<Fut, F, Req, Resp, E> Future for DriftFuture<Fut, F, Req>
where
    Fut: Future<Output = Result<Resp, E>>,
    F: Features<Req, Resp>,
{
    type Output = Result<Resp, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = ready!(this.inner.poll(cx));
        if let (Ok(resp), Some(mut s)) = (&out, this.sampled.take()) {
            s.features.outputs(resp, &mut s.row);
            s.handle.submit(s.ticket, s.row);
        }
        Poll::Ready(out)
    }
}
