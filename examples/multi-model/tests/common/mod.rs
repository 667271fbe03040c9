//! A server on an ephemeral port and a small HTTP client for the tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use example_multi_model::{Config, Server};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The checked-in test configuration.
pub const TEST_CONFIG: &str = include_str!("../../config/test.toml");

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers, body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Starts `config` on 127.0.0.1:0 and waits (bounded) until it is ready.
pub async fn start(config: &str) -> Running {
    let config = Config::parse(config).expect("test config");
    let server = Server::start(config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = Arc::clone(&server);
    let task = tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let running = Running {
        addr,
        server,
        stop: Some(stop),
        task,
        client,
    };
    running
        .until(|| async { running.get("/readyz").await.status == StatusCode::OK })
        .await;
    running
}

impl Running {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let rsp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .expect("request sent");
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, Bytes::new(), &[]).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request(
            Method::POST,
            path,
            body.into(),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// Polls `cond` every 5 ms for at most 10 s.
    pub async fn until<F, Fut>(&self, cond: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..2000 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not met within 10 s");
    }

    /// `GET /v1/models`, as JSON.
    pub async fn models(&self) -> serde_json::Value {
        let r = self.get("/v1/models").await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()
    }

    /// Stops accepting and waits for the server to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// An identity request with one FP32 row of `values`.
pub fn fp32_row(values: &[f32]) -> String {
    serde_json::json!({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, values.len()], "data": values}]
    })
    .to_string()
}

/// The same server's KServe v2 gRPC service on its own ephemeral port.
pub struct Grpc {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tower::BoxError>>,
}

impl Running {
    /// Serves gRPC for this server on 127.0.0.1:0.
    pub async fn serve_grpc(&self) -> Grpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Arc::clone(&self.server);
        let task = tokio::spawn(async move {
            server
                .serve_grpc(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Grpc { addr, stop, task }
    }
}

impl Grpc {
    /// Stops accepting and waits for the gRPC server to finish.
    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}
