//! What the tests of nodes and fronts share (tests/nodes.rs,
//! tests/front_scale.rs, tests/front_kube_nodes.rs): the nodes' configuration, a real etcd
//! (Debian's etcd-server, installed by scripts/test_setup.sh), and the
//! client side of a front under closed-loop load, and a kubeconfig for a
//! fake API server (tests/front_kube.rs, tests/front_kube_nodes.rs).

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use example_multi_model::remote::Front;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::time::Instant;

/// Each request costs the model 12 ms (a batch of n takes n x 12 ms, so a
/// partial batch wastes nothing): 83 requests/s per node, whatever the
/// CPU and however the requests arrive.
pub const NODE_CONFIG: &str = r#"
[server]
addr = "127.0.0.1:0"
request_timeout = "10s"
host_memory = 268435456

[[deployment]]
name = "identity"
model = "identity"
identity_item_delay = "12ms"

[deployment.batching]
max_batch_size = 8
max_wait = "2ms"
queue_capacity = 1024
queue_timeout = "10s"

[deployment.device]
kind = "cpu"

[deployment.replicas]
min = 1
max = 1
"#;

/// etcd on every host address (the nodes reach it over their veth), a
/// temporary data directory, killed on drop.
pub struct Etcd {
    child: std::process::Child,
    /// Its client port (on every address).
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Etcd {
    /// Starts it and waits until it is healthy.
    pub fn start() -> Etcd {
        assert!(
            std::path::Path::new("/usr/bin/etcd").exists(),
            "/usr/bin/etcd is missing: run scripts/test_setup.sh (it installs Debian's etcd-server)"
        );
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .unwrap()
                .port()
        };
        let (port, peer) = (free(), free());
        let dir = tempfile::tempdir().unwrap();
        let peer_url = format!("http://127.0.0.1:{peer}");
        let child = Command::new("/usr/bin/etcd")
            .arg("--name=nodes")
            .arg(format!("--data-dir={}", dir.path().join("data").display()))
            .arg(format!("--listen-client-urls=http://0.0.0.0:{port}"))
            .arg(format!("--advertise-client-urls=http://127.0.0.1:{port}"))
            .arg(format!("--listen-peer-urls={peer_url}"))
            .arg(format!("--initial-advertise-peer-urls={peer_url}"))
            .arg(format!("--initial-cluster=nodes={peer_url}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start etcd");
        let etcd = Etcd {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let healthy = std::net::TcpStream::connect(("127.0.0.1", port)).is_ok_and(|mut s| {
                use std::io::{Read, Write};
                let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
                let mut out = String::new();
                s.write_all(b"GET /health HTTP/1.0\r\n\r\n").is_ok()
                    && s.read_to_string(&mut out).is_ok()
                    && out.contains("\"health\":\"true\"")
            });
            if healthy {
                return etcd;
            }
            assert!(Instant::now() < deadline, "etcd not healthy within 20 s");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    /// Its client URL on loopback.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

/// A plain HTTP client.
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// One inference through the front: status and `Retry-After`.
pub async fn infer(
    client: &Client<HttpConnector, Full<Bytes>>,
    base: &str,
) -> (u16, Option<String>) {
    let body = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}"#;
    let req = hyper::Request::post(format!("{base}/v1/models/identity/infer"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    match tokio::time::timeout(Duration::from_secs(40), client.request(req)).await {
        Ok(Ok(rsp)) => {
            let status = rsp.status().as_u16();
            let retry = rsp
                .headers()
                .get("retry-after")
                .map(|v| v.to_str().unwrap_or_default().to_string());
            let ok = rsp.into_body().collect().await.is_ok();
            (if ok { status } else { 0 }, retry)
        }
        _ => (0, None),
    }
}

/// Waits (bounded) until `done` holds.
pub async fn until(what: &str, limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Endpoints the front serves from.
pub fn serving(front: &Front) -> usize {
    front.endpoints().iter().filter(|e| e.serving).count()
}

/// Closed-loop load through the front: `active` workers of `max` send one
/// request after the other (the others idle) until `stop`; counts sent and
/// answered ok.
pub struct Load {
    active: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
    ok: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    pub fn start(base: &str, max: usize) -> Self {
        let load = Load {
            active: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            sent: Arc::new(AtomicUsize::new(0)),
            ok: Arc::new(AtomicUsize::new(0)),
            tasks: Vec::new(),
        };
        let client = client();
        let tasks = (0..max)
            .map(|i| {
                let (client, base) = (client.clone(), base.to_string());
                let (active, stop, sent, ok) = (
                    load.active.clone(),
                    load.stop.clone(),
                    load.sent.clone(),
                    load.ok.clone(),
                );
                tokio::spawn(async move {
                    while !stop.load(Ordering::Relaxed) {
                        if i >= active.load(Ordering::Relaxed) {
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                        sent.fetch_add(1, Ordering::Relaxed);
                        if infer(&client, &base).await.0 == 200 {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                })
            })
            .collect();
        Load { tasks, ..load }
    }

    pub fn set(&self, n: usize) {
        self.active.store(n, Ordering::Relaxed);
    }

    pub async fn finish(self) -> (usize, usize) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        (
            self.sent.load(Ordering::Relaxed),
            self.ok.load(Ordering::Relaxed),
        )
    }
}

/// Requests a node has answered, from its `/metrics`.
pub async fn answered_by(base: &str) -> f64 {
    let rsp = client()
        .get(format!("{base}/metrics").parse().unwrap())
        .await;
    let Ok(rsp) = rsp else { return 0.0 };
    let body = rsp.into_body().collect().await.map(|b| b.to_bytes());
    let text = String::from_utf8_lossy(&body.unwrap_or_default()).to_string();
    convoy_remote::scrape::sum_series(&text, &["convoy_server_requests_total"]).unwrap_or(0.0)
}

/// Waits (bounded, 10 s each) until the front serves from node `id`, then
/// until the node at `base` has answered a request (its own `/metrics`):
/// when each was seen.
pub async fn serving_then_served(front: &Front, id: &str, base: &str) -> (Instant, Instant) {
    until(
        "the front serves from the new node",
        Duration::from_secs(10),
        || {
            front
                .endpoints()
                .iter()
                .any(|e| e.serving && e.endpoint.id == id)
        },
    )
    .await;
    let serving_at = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(10);
    while answered_by(base).await < 1.0 {
        assert!(Instant::now() < deadline, "the new node served nothing");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    (serving_at, Instant::now())
}

/// A kubeconfig at `dir/kubeconfig` for an API server at `api` (plain
/// HTTP, no credentials), its context's namespace `namespace`.
pub fn fake_kubeconfig(
    dir: &std::path::Path,
    api: std::net::SocketAddr,
    namespace: &str,
) -> std::path::PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: http://{api}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: {namespace}\ncurrent-context: fake\nusers:\n- name: fake\n  user: {{}}\n"
        ),
    )
    .unwrap();
    path
}

/// Raises `load` to `n` in flight and waits (bounded, 10 s) for the
/// autoscaler of the front's first deployment, version "1", to decide on
/// more than one node: when the load rose, and the count decided.
pub async fn raise_until_scale_up(front: &Front, load: &Load, n: usize) -> (Instant, u32) {
    let autoscaler = front.deployments()[0].autoscaler("1").unwrap().clone();
    let mut decisions = autoscaler.decisions();
    let high = Instant::now();
    load.set(n);
    let decided = tokio::time::timeout(
        Duration::from_secs(10),
        decisions.wait_for(|d| d.is_some_and(|d| d.desired > 1)),
    )
    .await
    .expect("a scale-up decision within 10 s")
    .unwrap()
    .map_or(0, |d| d.desired);
    (high, decided)
}
