//! A stand-in for a convoy node on loopback: KServe v2's ready probe, an
//! echoing infer route that names the node, and a metrics page the test
//! writes.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::Router;
use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Clone)]
struct NodeState {
    name: String,
    metrics: Arc<Mutex<String>>,
    served: Arc<AtomicU64>,
}

pub struct Node {
    pub addr: SocketAddr,
    pub metrics: Arc<Mutex<String>>,
    pub served: Arc<AtomicU64>,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Node {
    /// Starts on `addr` (port 0: any free port).
    pub async fn start(name: &str, addr: SocketAddr) -> Node {
        let state = NodeState {
            name: name.to_string(),
            metrics: Arc::new(Mutex::new(String::new())),
            served: Arc::new(AtomicU64::new(0)),
        };
        let app = Router::new()
            .route("/v2/health/ready", get(|| async { StatusCode::OK }))
            .route(
                "/v2/models/{model}/infer",
                post(
                    |State(s): State<NodeState>,
                     version: axum::http::Version,
                     body: axum::body::Bytes| async move {
                        s.served.fetch_add(1, Ordering::Relaxed);
                        let mut headers = HeaderMap::new();
                        headers.insert("x-node", s.name.parse().unwrap());
                        headers.insert("x-http-version", format!("{version:?}").parse().unwrap());
                        (headers, body)
                    },
                ),
            )
            .route(
                "/metrics",
                get(|State(s): State<NodeState>| async move { s.metrics.lock().clone() }),
            )
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Node {
            addr,
            metrics: state.metrics,
            served: state.served,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops listening and closes its connections; afterwards connecting
    /// to its address is refused.
    pub async fn stop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), task).await;
        }
    }

    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }
}
