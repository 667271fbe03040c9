//! Turning an [`Endpoint`] into a client service.
//!
//! A [`Connect`] makes one service per endpoint; the
//! [`Pool`](crate::Pool) wraps it for ejection and hands it to a balancer.
//! [`HttpConnector`] forwards HTTP requests (KServe v2 REST over HTTP/1.1,
//! v2 gRPC over HTTP/2 with prior knowledge) to the endpoint's address
//! with hyper, keeping the request's path and headers: the same request a
//! client would send to one node is sent to whichever node the balancer
//! picks. A generated tonic client can use a balancer over
//! `HttpConnector::grpc()` services as its transport.

mod http;

use std::fmt;

use tower::BoxError;

use crate::endpoint::Endpoint;

pub use self::http::{HttpConnector, HttpEndpoint, HttpProbe};

/// Makes the client service for an endpoint.
pub trait Connect: Send + Sync + 'static {
    /// The client service of one endpoint.
    type Service: Send + 'static;

    /// The service that sends requests to `endpoint`. Called again when an
    /// ejected endpoint comes back or its address changes; connecting may
    /// be lazy (done on the first request).
    fn connect(&self, endpoint: &Endpoint) -> Self::Service;
}

impl<F, S> Connect for F
where
    F: Fn(&Endpoint) -> S + Send + Sync + 'static,
    S: Send + 'static,
{
    type Service = S;

    fn connect(&self, endpoint: &Endpoint) -> S {
        self(endpoint)
    }
}

/// The request was never sent: the connection to the endpoint could not be
/// made (refused, unreachable, timed out) before anything was written, so
/// sending it elsewhere cannot run it twice.
/// [`NeverSentPolicy`](crate::NeverSentPolicy) retries only these.
#[derive(Debug)]
pub struct NotSent {
    inner: BoxError,
}

impl NotSent {
    /// Wraps the connection error.
    pub fn new(inner: impl Into<BoxError>) -> Self {
        Self {
            inner: inner.into(),
        }
    }

    /// `true` when `err` or any error in its source chain is a [`NotSent`].
    pub fn is_in(err: &(dyn std::error::Error + 'static)) -> bool {
        let mut cur = Some(err);
        while let Some(e) = cur {
            if e.is::<NotSent>() {
                return true;
            }
            cur = e.source();
        }
        false
    }
}

impl fmt::Display for NotSent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "request not sent: {}", self.inner)
    }
}

impl std::error::Error for NotSent {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.inner)
    }
}
