//! The front's Kubernetes scaler and EndpointSlice source end to end with
//! real node processes (feature `kubernetes`): a stateful fake API server
//! on loopback (the kubeconfig in `KUBECONFIG` points at it) and a small
//! controller behind it, in this test. No real cluster: the controller
//! plays the Deployment, ReplicaSet and EndpointSlice controllers.
//!
//! * The node Deployment's `scale` subresource: GET answers the current
//!   `spec.replicas`/`status.replicas`, PATCH sets `spec.replicas` (409 on
//!   an old `resourceVersion`).
//! * The controller starts node processes of the server (identity model,
//!   12 ms an item) to match; once a node answers `/readyz` its endpoint
//!   (ready) is published in an EndpointSlice of the Service and streamed
//!   to open watches. Each node listens on its own loopback port and a
//!   slice's ports are shared by its endpoints, so each pod has its own
//!   slice (as the EndpointSlice controller does for pods whose ports
//!   differ).
//! * On a scale-down it removes the pod with the lowest
//!   `controller.kubernetes.io/pod-deletion-cost` (then the newest, like
//!   the ReplicaSet controller), marks its endpoint terminating (not
//!   serving, not ready), and after a grace deletes the slice and sends
//!   the process SIGTERM (the node finishes what it admitted).
//! * Pods: list and PATCH (the deletion cost) on stored annotations;
//!   Leases: GET, POST and PUT on stored objects, so the front holds the
//!   leadership throughout. Every call is recorded.
//!
//! The test: load through the front makes it scale up through the API,
//! the new node serves, the timings decision → PATCH → node ready → slice
//! updated → serving at the front → first request served there are
//! printed (never asserted); then the load falls and the front scales
//! down: no request is lost, the deletion cost is written before the
//! scale PATCH that lowers the replicas, the marked pod is the one
//! removed, and its process exits cleanly.
//!
//! Run with `cargo test -p example-multi-model --features kubernetes --test
//! front_kube_nodes` (`make test-examples` does).
#![cfg(feature = "kubernetes")]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::process::ExitStatus;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use example_multi_model::remote::{Front, Scalers};
use example_multi_model::Config;
use http_body_util::BodyExt;
use parking_lot::Mutex;
use serde_json::{json, Value};
use testkit::ServerProcess;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

mod cluster;
use cluster::{
    answered_by, fake_kubeconfig, raise_until_scale_up, serving, serving_then_served, until, Load,
    NODE_CONFIG,
};

const NODE: &str = env!("CARGO_BIN_EXE_multi-model");
const NS: &str = "convoy";
const SERVICE: &str = "convoy-node";
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";
/// Between an endpoint marked terminating and its process's SIGTERM.
const GRACE: Duration = Duration::from_millis(500);

/// What the controller did, and when.
#[derive(Debug, Clone)]
enum Step {
    /// A pod's node process listens and answers `/readyz` (name, base URL).
    Ready(String, String),
    /// Its slice (ready endpoint) was published.
    Published(String),
    /// Its endpoint was marked terminating (name, deletion cost).
    Terminating(String, i64),
}

struct Pod {
    created: u32,
    /// The node process, once it answers `/readyz`.
    node: Option<ServerProcess>,
    addr: Option<SocketAddr>,
    annotations: serde_json::Map<String, Value>,
    terminating: bool,
}

impl Pod {
    fn cost(&self) -> i64 {
        self.annotations
            .get(COST)
            .and_then(Value::as_str)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

/// A scale PATCH that changed `spec.replicas`: its index in the calls.
#[derive(Debug, Clone, Copy)]
struct ScaleWrite {
    call: usize,
    from: u32,
    to: u32,
    at: Instant,
}

#[derive(Default)]
struct World {
    rv: u64,
    desired: u32,
    scale_rv: u64,
    next_pod: u32,
    pods: BTreeMap<String, Pod>,
    /// The Service's slices by name.
    slices: BTreeMap<String, Value>,
    /// Slice watch events by resourceVersion.
    events: Vec<(u64, Value)>,
    leases: BTreeMap<String, Value>,
    /// Every call: "METHOD path" (`?watch` after a watch's path).
    calls: Vec<String>,
    /// When each call came.
    call_times: Vec<Instant>,
    writes: Vec<ScaleWrite>,
    /// Deletion-cost PATCHes: call index, pod, cost written (None: cleared).
    costs: Vec<(usize, String, Option<i64>)>,
    steps: Vec<(Instant, Step)>,
    exits: Vec<(String, JoinHandle<ExitStatus>)>,
    failures: Vec<String>,
}

/// The fake API server and controller; clone it freely.
#[derive(Clone)]
struct Cluster {
    world: Arc<Mutex<World>>,
    changed: Arc<Notify>,
    config: Arc<std::path::PathBuf>,
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code })
}

fn answer(code: u16, body: Value) -> Response {
    (
        axum::http::StatusCode::from_u16(code).unwrap(),
        [("content-type", "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// RFC 7386 merge of `patch` into `target`.
fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let fields = target.as_object_mut().unwrap();
    for (key, value) in patch {
        if value.is_null() {
            fields.remove(key);
        } else {
            merge_patch(fields.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

impl Cluster {
    fn new(config: std::path::PathBuf, replicas: u32) -> Self {
        Cluster {
            world: Arc::new(Mutex::new(World {
                rv: 100,
                desired: replicas,
                scale_rv: 100,
                ..World::default()
            })),
            changed: Arc::new(Notify::new()),
            config: Arc::new(config),
        }
    }

    fn step(w: &mut World, step: Step) {
        w.steps.push((Instant::now(), step));
    }

    fn steps(&self) -> Vec<(Instant, Step)> {
        self.world.lock().steps.clone()
    }

    /// Pods not terminating, started or not.
    fn live(w: &World) -> usize {
        w.pods.values().filter(|p| !p.terminating).count()
    }

    /// Writes (or, with `None`, deletes) pod `name`'s slice and queues the
    /// watch event.
    fn publish(&self, w: &mut World, name: &str, endpoint: Option<(SocketAddr, bool)>) {
        w.rv += 1;
        let rv = w.rv;
        let slice_name = format!("{name}-slice");
        let (kind, slice) = match endpoint {
            Some((addr, ready)) => {
                let slice = json!({
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": slice_name,
                        "namespace": NS,
                        "resourceVersion": rv.to_string(),
                        "labels": { "kubernetes.io/service-name": SERVICE },
                    },
                    "addressType": "IPv4",
                    "ports": [{ "name": "http", "port": addr.port(), "protocol": "TCP" }],
                    "endpoints": [{
                        "addresses": [addr.ip().to_string()],
                        "conditions": { "ready": ready, "serving": ready, "terminating": !ready },
                        "targetRef": { "kind": "Pod", "namespace": NS, "name": name },
                    }],
                });
                let kind = if w.slices.contains_key(&slice_name) {
                    "MODIFIED"
                } else {
                    "ADDED"
                };
                w.slices.insert(slice_name, slice.clone());
                (kind, slice)
            }
            None => {
                let Some(mut slice) = w.slices.remove(&slice_name) else {
                    return;
                };
                slice["metadata"]["resourceVersion"] = json!(rv.to_string());
                ("DELETED", slice)
            }
        };
        w.events
            .push((rv, json!({ "type": kind, "object": slice })));
        self.changed.notify_waiters();
    }

    /// One round of the ReplicaSet and EndpointSlice controllers.
    fn reconcile(&self) {
        let mut w = self.world.lock();
        let live = Self::live(&w) as u32;
        for _ in live..w.desired {
            w.next_pod += 1;
            let (created, name) = (w.next_pod, format!("{SERVICE}-{}", w.next_pod));
            w.pods.insert(
                name.clone(),
                Pod {
                    created,
                    node: None,
                    addr: None,
                    annotations: serde_json::Map::new(),
                    terminating: false,
                },
            );
            tokio::spawn(self.clone().start(name));
        }
        if w.desired < live {
            // The ReplicaSet's ranking: not ready first, then the lower
            // deletion cost, then the newer.
            let mut ranked: Vec<(bool, i64, std::cmp::Reverse<u32>, String)> = w
                .pods
                .iter()
                .filter(|(_, p)| !p.terminating)
                .map(|(n, p)| {
                    (
                        p.addr.is_some(),
                        p.cost(),
                        std::cmp::Reverse(p.created),
                        n.clone(),
                    )
                })
                .collect();
            ranked.sort();
            for (_, cost, _, name) in ranked.into_iter().take((live - w.desired) as usize) {
                let pod = w.pods.get_mut(&name).unwrap();
                pod.terminating = true;
                let addr = pod.addr;
                Self::step(&mut w, Step::Terminating(name.clone(), cost));
                if let Some(addr) = addr {
                    self.publish(&mut w, &name, Some((addr, false)));
                    tokio::spawn(self.clone().stop(name));
                }
                // A pod still starting is stopped when its process is up.
            }
        }
    }

    /// Starts pod `name`'s node process and publishes it once it answers
    /// `/readyz`.
    async fn start(self, name: String) {
        let config = self.config.clone();
        let started = tokio::task::spawn_blocking(move || {
            ServerProcess::command(NODE)
                .arg("--config")
                .arg(&*config)
                .args(["--addr", "127.0.0.1:0"])
                .start_timeout(Duration::from_secs(30))
                .start()
        })
        .await
        .unwrap();
        let node = match started {
            Ok(node) => node,
            Err(e) => {
                self.world.lock().failures.push(format!("{name}: {e}"));
                return;
            }
        };
        let base = node.base().to_string();
        let deadline = Instant::now() + Duration::from_secs(10);
        let client = cluster::client();
        loop {
            let ready = client
                .get(format!("{base}/readyz").parse().unwrap())
                .await
                .is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            if Instant::now() > deadline {
                let why = format!("{name}: /readyz not 200 within 10 s");
                self.world.lock().failures.push(why);
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let addr: SocketAddr = base.trim_start_matches("http://").parse().unwrap();
        let mut w = self.world.lock();
        Self::step(&mut w, Step::Ready(name.clone(), base));
        let Some(pod) = w.pods.get_mut(&name).filter(|p| !p.terminating) else {
            // Scaled down while it started.
            let stop = tokio::task::spawn_blocking(move || node.terminate());
            w.pods.remove(&name);
            w.exits.push((name, stop));
            return;
        };
        pod.node = Some(node);
        pod.addr = Some(addr);
        self.publish(&mut w, &name, Some((addr, true)));
        Self::step(&mut w, Step::Published(name));
    }

    /// After the grace: deletes pod `name`'s slice and stops its process.
    async fn stop(self, name: String) {
        tokio::time::sleep(GRACE).await;
        let mut w = self.world.lock();
        self.publish(&mut w, &name, None);
        let node = w.pods.remove(&name).and_then(|p| p.node);
        if let Some(node) = node {
            // SIGTERM: the node finishes what it admitted, then exits.
            let stop = tokio::task::spawn_blocking(move || node.terminate());
            w.exits.push((name, stop));
        }
    }

    /// Stores a Lease written by the elector under a new resourceVersion.
    fn store_lease(w: &mut World, name: String, mut lease: Value) -> Value {
        w.rv += 1;
        lease["metadata"]["resourceVersion"] = json!(w.rv.to_string());
        w.leases.insert(name, lease.clone());
        lease
    }

    fn scale(w: &World) -> Value {
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": { "name": SERVICE, "namespace": NS, "resourceVersion": w.scale_rv.to_string() },
            "spec": { "replicas": w.desired },
            "status": { "replicas": Self::live(w), "selector": format!("app={SERVICE}") },
        })
    }

    fn pod(name: &str, p: &Pod) -> Value {
        let mut meta = json!({
            "name": name,
            "namespace": NS,
            "labels": { "app": SERVICE },
            "annotations": p.annotations,
        });
        if p.terminating {
            meta["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
        }
        let ip = p.addr.map(|a| a.ip().to_string());
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": meta,
            "status": { "phase": if p.addr.is_some() { "Running" } else { "Pending" }, "podIP": ip },
        })
    }

    /// Answers one API call.
    async fn route(self, req: Request) -> Response {
        let method = req.method().as_str().to_owned();
        let path = req.uri().path().to_owned();
        let params: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        let watch = params.get("watch").is_some_and(|v| v == "true" || v == "1");
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let scale = format!("/apis/apps/v1/namespaces/{NS}/deployments/{SERVICE}/scale");
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let slices = format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices");
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let mut w = self.world.lock();
        let call = w.calls.len();
        w.call_times.push(Instant::now());
        w.calls.push(format!(
            "{method} {path}{}",
            if watch { "?watch" } else { "" }
        ));
        match (method.as_str(), path.as_str()) {
            ("GET", p) if p == scale => answer(200, Self::scale(&w)),
            ("PATCH", p) if p == scale => {
                let wanted = body["metadata"]["resourceVersion"].as_str();
                if wanted.is_some_and(|rv| rv != w.scale_rv.to_string()) {
                    return answer(409, status(409, "Conflict"));
                }
                if let Some(n) = body["spec"]["replicas"].as_u64() {
                    let (from, to) = (w.desired, n as u32);
                    if from != to {
                        w.writes.push(ScaleWrite {
                            call,
                            from,
                            to,
                            at: Instant::now(),
                        });
                    }
                    w.desired = to;
                    w.rv += 1;
                    w.scale_rv = w.rv;
                }
                let scale = Self::scale(&w);
                drop(w);
                self.reconcile();
                answer(200, scale)
            }
            ("GET", p) if p == pods => {
                let items: Vec<Value> = w.pods.iter().map(|(n, p)| Self::pod(n, p)).collect();
                answer(
                    200,
                    json!({ "kind": "PodList", "apiVersion": "v1", "metadata": { "resourceVersion": w.rv.to_string() }, "items": items }),
                )
            }
            ("PATCH", p) if p.starts_with(&format!("{pods}/")) => {
                let name = p[pods.len() + 1..].to_owned();
                let Some(pod) = w.pods.get_mut(&name) else {
                    return answer(404, status(404, "NotFound"));
                };
                let mut meta = json!({ "annotations": pod.annotations });
                merge_patch(&mut meta, &body["metadata"]);
                pod.annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
                let cost = pod.annotations.contains_key(COST).then(|| pod.cost());
                let pod = Self::pod(&name, pod);
                w.costs.push((call, name, cost));
                answer(200, pod)
            }
            ("GET", p) if p == slices && watch => {
                let from: u64 = params
                    .get("resourceVersion")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                let timeout: u64 = params
                    .get("timeoutSeconds")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(290);
                drop(w);
                let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(64);
                tokio::spawn(self.clone().stream_watch(from, timeout, tx));
                let body = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|b| (Ok::<_, std::io::Error>(b), rx))
                });
                Response::builder()
                    .header("content-type", "application/json")
                    .body(Body::from_stream(body))
                    .unwrap()
            }
            ("GET", p) if p == slices => {
                let items: Vec<Value> = w.slices.values().cloned().collect();
                answer(
                    200,
                    json!({ "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": w.rv.to_string() }, "items": items }),
                )
            }
            ("GET", p) if p.starts_with(&format!("{leases}/")) => {
                match w.leases.get(&p[leases.len() + 1..]) {
                    Some(lease) => answer(200, lease.clone()),
                    None => answer(404, status(404, "NotFound")),
                }
            }
            ("POST", p) if p == leases => {
                let name = body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if w.leases.contains_key(&name) {
                    return answer(409, status(409, "AlreadyExists"));
                }
                answer(201, Self::store_lease(&mut w, name, body))
            }
            ("PUT", p) if p.starts_with(&format!("{leases}/")) => {
                let name = p[leases.len() + 1..].to_owned();
                let current = w
                    .leases
                    .get(&name)
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current.as_ref() != Some(&body["metadata"]["resourceVersion"]) {
                    return answer(409, status(409, "Conflict"));
                }
                answer(200, Self::store_lease(&mut w, name, body))
            }
            _ => answer(404, status(404, "NotFound")),
        }
    }

    /// Streams the slice events after `from` until `timeout` seconds pass,
    /// then a bookmark at the current version.
    async fn stream_watch(self, mut from: u64, timeout: u64, tx: tokio::sync::mpsc::Sender<Bytes>) {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        loop {
            let notified = self.changed.notified();
            let pending: Vec<(u64, Value)> = {
                let w = self.world.lock();
                w.events
                    .iter()
                    .filter(|(rv, _)| *rv > from)
                    .cloned()
                    .collect()
            };
            for (rv, event) in pending {
                if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                    return;
                }
                from = rv;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let rv = self.world.lock().rv;
                let bookmark = json!({ "type": "BOOKMARK", "object": { "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": rv.to_string() } } });
                let _ = tx.send(Bytes::from(format!("{bookmark}\n"))).await;
                return;
            }
        }
    }
}

async fn api(State(cluster): State<Cluster>, req: Request) -> Response {
    cluster.route(req).await
}

async fn serve(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// When the first step matching `pick` happened, and what it was.
fn first<T>(steps: &[(Instant, Step)], pick: impl Fn(&Step) -> Option<T>) -> Option<(Instant, T)> {
    steps.iter().find_map(|(t, s)| pick(s).map(|v| (*t, v)))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_scales_node_processes_through_the_api_and_a_scale_down_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node_config = dir.path().join("node.toml");
    std::fs::write(&node_config, NODE_CONFIG).unwrap();
    let cluster = Cluster::new(node_config, 1);
    let api_addr = serve(
        axum::Router::new()
            .fallback(api)
            .with_state(cluster.clone()),
    )
    .await;
    let controller = cluster.clone();
    let controller = tokio::spawn(async move {
        // Bounded: 2 400 rounds of 50 ms.
        for _ in 0..2_400 {
            controller.reconcile();
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    let kubeconfig = fake_kubeconfig(dir.path(), api_addr, NS);
    // The only test of this binary: nothing else reads the environment.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    std::env::set_var("POD_NAME", "front-0");
    let text = format!(
        r#"
[server]
request_timeout = "30s"

[[deployment]]
name = "identity"

[deployment.remote]
kubernetes = {{ namespace = "{NS}", port = "http", services = {{ "1" = "{SERVICE}" }} }}

[[deployment.remote.autoscale]]
version = "1"
min = 1
max = 3
target_ongoing = 8
interval = "250ms"
look_back = "1s"
downscale_delay = "1s"
kubernetes = {{ deployment = "{SERVICE}", lease = "{SERVICE}-autoscaler" }}
"#
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let base = format!("http://{}", serve(front.clone().router()).await);
    let failures = || cluster.world.lock().failures.clone();
    until("the first node serves", Duration::from_secs(30), || {
        assert_eq!(failures(), Vec::<String>::new());
        serving(&front) == 1
    })
    .await;
    let first_pod = format!("{SERVICE}-1");

    // 24 in flight at 8 per node: up to 3 through the scale subresource.
    let load = Load::start(&base, 24);
    let (high, decided) = raise_until_scale_up(&front, &load, 24).await;
    let decision_published_at = Instant::now();
    let mut new_node = None;
    until("a new node is published", Duration::from_secs(30), || {
        assert_eq!(failures(), Vec::<String>::new());
        let steps = cluster.steps();
        new_node = first(&steps, |s| match s {
            Step::Published(n) if *n != first_pod => Some(n.clone()),
            _ => None,
        });
        new_node.is_some()
    })
    .await;
    let (published_at, id) = new_node.unwrap();
    let steps = cluster.steps();
    let (ready_at, node_base) = first(&steps, |s| match s {
        Step::Ready(n, b) if *n == id => Some(b.clone()),
        _ => None,
    })
    .unwrap();
    let (write, decided_at) = {
        let w = cluster.world.lock();
        let write = w.writes[0];
        // The decision: the scaler's fresh read of the scale just before
        // its PATCH (`scale_to` reads, then writes).
        let read = (0..write.call)
            .rev()
            .find(|&i| w.calls[i].starts_with("GET ") && w.calls[i].ends_with("/scale"))
            .expect("a read of the scale before the PATCH");
        (write, w.call_times[read])
    };
    assert!(write.to > 1, "{write:?}");
    let (serving_at, first_served_at) = serving_then_served(&front, &id, &node_base).await;
    println!(
        "kubernetes scale-up 1 -> {decided} nodes under 24 in flight: decision (the scaler's read of the scale before its PATCH) {:?} after the load rose; scale PATCH (1 -> {}) +{:?}; decision published +{:?}; pod {id} ready (process started, /readyz 200) +{:?} after the PATCH; its EndpointSlice published +{:?}; serving at the front (watch event, 20 ms polls) +{:?}; first request served on it (its /metrics, 10 ms polls) +{:?} (decision to first request {:?})",
        decided_at.saturating_duration_since(high),
        write.to,
        write.at.saturating_duration_since(decided_at),
        decision_published_at.saturating_duration_since(write.at),
        ready_at.saturating_duration_since(write.at),
        published_at.saturating_duration_since(ready_at),
        serving_at.saturating_duration_since(published_at),
        first_served_at.saturating_duration_since(serving_at),
        first_served_at.saturating_duration_since(decided_at),
    );
    until("three nodes serve", Duration::from_secs(30), || {
        assert_eq!(failures(), Vec::<String>::new());
        serving(&front) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Every node served (each one's own count).
    let bases: Vec<(String, String)> = cluster
        .steps()
        .into_iter()
        .filter_map(|(_, s)| match s {
            Step::Ready(n, b) => Some((n, b)),
            _ => None,
        })
        .collect();
    assert_eq!(bases.len(), 3, "{bases:?}");
    for (name, base) in &bases {
        let n = answered_by(base).await;
        assert!(n > 0.0, "node {name} served nothing");
    }

    // The load falls to 2 in flight: a planned scale-down to one node,
    // every request answered through it.
    load.set(2);
    let low = Instant::now();
    until("scaled down to one pod", Duration::from_secs(20), || {
        let w = cluster.world.lock();
        w.desired == 1 && w.pods.len() == 1 && w.exits.len() == 2
    })
    .await;
    let down_after = low.elapsed();
    let exits: Vec<(String, JoinHandle<ExitStatus>)> =
        cluster.world.lock().exits.drain(..).collect();
    let mut stopped = Vec::new();
    for (name, exit) in exits {
        stopped.push((name, exit.await.unwrap()));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (sent, ok) = load.finish().await;
    controller.abort();

    let w = cluster.world.lock();
    let marked: Vec<(String, i64)> = w
        .steps
        .iter()
        .filter_map(|(_, s)| match s {
            Step::Terminating(n, cost) => Some((n.clone(), *cost)),
            _ => None,
        })
        .collect();
    println!(
        "kubernetes scale writes {}; scale-down after the load fell to 2 in flight: pods removed {marked:?} (name, deletion cost) {down_after:?} after, exits {stopped:?}; {sent} requests sent over the whole run, {ok} answered ok, {} lost; scale writes {:?}; deletion costs {:?}",
        w.writes
            .iter()
            .map(|s| format!("{} -> {}", s.from, s.to))
            .collect::<Vec<_>>()
            .join(", "),
        sent - ok,
        w.writes.iter().map(|s| (s.call, s.from, s.to)).collect::<Vec<_>>(),
        w.costs,
    );
    assert!(sent > 0);
    assert_eq!(ok, sent, "requests lost over the run");
    // Each scale PATCH that lowered the replicas came after a deletion
    // cost written since the previous scale write.
    let mut previous = 0;
    for s in &w.writes {
        if s.to < s.from {
            assert!(
                w.costs
                    .iter()
                    .any(|(call, _, cost)| (previous..s.call).contains(call) && cost.is_some()),
                "no deletion cost before the scale-down {s:?}: calls {:?}",
                w.calls
            );
        }
        previous = s.call;
    }
    assert!(w.writes.iter().any(|s| s.to < s.from), "{:?}", w.writes);
    // The pods removed are those the front marked, the lowest cost first.
    assert_eq!(marked.len(), 2, "{marked:?}");
    for (name, cost) in &marked {
        assert!(*cost < 0, "{name} removed unmarked (cost {cost})");
        assert!(!w.pods.contains_key(name), "{name} still listed");
    }
    assert_eq!(stopped.len(), 2, "{stopped:?}");
    for (name, status) in &stopped {
        assert!(status.success(), "{name} exited with {status}");
        assert!(
            marked.iter().any(|(n, _)| n == name),
            "{name} stopped unmarked"
        );
    }
    // The front held the Lease throughout: created once, then renewed.
    let creates = w
        .calls
        .iter()
        .filter(|c| *c == &format!("POST /apis/coordination.k8s.io/v1/namespaces/{NS}/leases"))
        .count();
    assert_eq!(creates, 1, "{:?}", w.calls);
    assert!(w.failures.is_empty(), "{:?}", w.failures);
    drop(w);
    assert_eq!(serving(&front), 1);
    front.shutdown();
}
