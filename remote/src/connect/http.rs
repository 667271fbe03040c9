//! hyper's client as a [`Connect`]: one service per endpoint forwarding
//! requests to its address.

use std::net::SocketAddr;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::FutureExt;
use http::uri::{Authority, Scheme, Uri};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty};
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector as HyperConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tower::{BoxError, Service};

use super::{Connect, NotSent};
use crate::endpoint::Endpoint;

/// Forwards HTTP requests to endpoints with one shared hyper client
/// (connection pool keyed by address).
///
/// `B` is the request body type: `http_body_util::Full<Bytes>` for
/// requests that may be retried (they are `Clone`), `tonic::body::Body`
/// for a tonic client's transport.
#[derive(Debug)]
pub struct HttpConnector<B> {
    client: Client<HyperConnector, B>,
}

impl<B> Clone for HttpConnector<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
        }
    }
}

fn hyper_connector(connect_timeout: Duration) -> HyperConnector {
    let mut c = HyperConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(connect_timeout));
    c
}

impl<B> HttpConnector<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    /// HTTP/1.1 (KServe v2 REST, v1), connections kept alive and reused.
    pub fn http1(connect_timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(90))
                .build(hyper_connector(connect_timeout)),
        }
    }

    /// HTTP/2 with prior knowledge (KServe v2 gRPC): one multiplexed
    /// connection per endpoint.
    pub fn grpc(connect_timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new())
                .http2_only(true)
                .build(hyper_connector(connect_timeout)),
        }
    }
}

impl<B> Connect for HttpConnector<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Service = HttpEndpoint<B>;

    fn connect(&self, endpoint: &Endpoint) -> HttpEndpoint<B> {
        HttpEndpoint {
            client: self.client.clone(),
            authority: authority(endpoint.addr),
        }
    }
}

fn authority(addr: SocketAddr) -> Authority {
    addr.to_string()
        .parse()
        .expect("a socket address is a valid authority")
}

/// One endpoint's client: sends each request to the endpoint's address,
/// keeping its path, query, method, headers and body.
///
/// A failure to connect is a [`NotSent`] error; any other error may have
/// reached the endpoint.
#[derive(Debug)]
pub struct HttpEndpoint<B> {
    client: Client<HyperConnector, B>,
    authority: Authority,
}

impl<B> Clone for HttpEndpoint<B> {
    fn clone(&self) -> Self {
        Self {
            client: self.client.clone(),
            authority: self.authority.clone(),
        }
    }
}

impl<B> Service<Request<B>> for HttpEndpoint<B>
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    type Response = Response<Incoming>;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Response<Incoming>, BoxError>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        let (mut parts, body) = req.into_parts();
        let mut uri = parts.uri.into_parts();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(self.authority.clone());
        if uri.path_and_query.is_none() {
            uri.path_and_query = Some("/".parse().expect("a valid path"));
        }
        parts.uri = match Uri::from_parts(uri) {
            Ok(uri) => uri,
            Err(e) => return futures::future::ready(Err(e.into())).boxed(),
        };
        let fut = self.client.request(Request::from_parts(parts, body));
        async move {
            fut.await.map_err(|e| {
                if e.is_connect() {
                    BoxError::from(NotSent::new(e))
                } else {
                    BoxError::from(e)
                }
            })
        }
        .boxed()
    }
}

/// A health probe over HTTP: `GET path` answered 200 within the pool's
/// probe timeout (KServe v2's `/v2/health/ready`).
#[derive(Debug, Clone)]
pub struct HttpProbe {
    client: Client<HyperConnector, Empty<Bytes>>,
    path: String,
}

impl HttpProbe {
    /// Probes `path` (e.g. `/v2/health/ready`).
    pub fn new(path: impl Into<String>, connect_timeout: Duration) -> Self {
        Self {
            client: Client::builder(TokioExecutor::new()).build(hyper_connector(connect_timeout)),
            path: path.into(),
        }
    }
}

impl crate::pool::Probe for HttpProbe {
    fn probe(&self, endpoint: &Endpoint) -> BoxFuture<'static, bool> {
        let uri = format!("http://{}{}", endpoint.addr, self.path);
        let client = self.client.clone();
        async move {
            let Ok(req) = Request::get(uri).body(Empty::new()) else {
                return false;
            };
            match client.request(req).await {
                Ok(rsp) => {
                    let ok = rsp.status() == http::StatusCode::OK;
                    // Read the (short) body so the connection is reused.
                    let _ = rsp.into_body().collect().await;
                    ok
                }
                Err(_) => false,
            }
        }
        .boxed()
    }
}
