//! A small in-process fake of the API server and the controllers behind it,
//! served over the mock: one Deployment (its `scale` subresource), its pods,
//! the Service's EndpointSlice and Leases. The "controller" reacts to
//! `spec.replicas` like the ReplicaSet and EndpointSlice controllers: new pods
//! start not ready and become ready after `start_delay`; on a scale-down it
//! picks victims by the ReplicaSet ranking (not ready first, then lower
//! `pod-deletion-cost`, then newest), marks them terminating (still serving)
//! and removes them after `grace`. Every change to the endpoints is a
//! MODIFIED event on the slice, streamed to open watches.

use std::collections::BTreeMap;
use std::sync::Arc;

use bytes::Bytes;
use http::Method;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::{Duration, Instant};

use super::{answer, merge_patch, read, streamed, ApiHandle, Seen};

pub const NS: &str = "convoy";
pub const NAME: &str = "convoy-node";
const COST: &str = "controller.kubernetes.io/pod-deletion-cost";

#[derive(Debug, Clone)]
struct Pod {
    ip: String,
    created: u32,
    ready_at: Instant,
    terminating_until: Option<Instant>,
    annotations: serde_json::Map<String, Value>,
}

impl Pod {
    fn ready(&self, now: Instant) -> bool {
        now >= self.ready_at
    }

    fn cost(&self) -> i64 {
        self.annotations
            .get(COST)
            .and_then(Value::as_str)
            .and_then(|c| c.parse().ok())
            .unwrap_or(0)
    }
}

#[derive(Debug, Default)]
struct State {
    rv: u64,
    desired: i64,
    scale_rv: u64,
    pods: BTreeMap<String, Pod>,
    next_pod: u32,
    slice: Value,
    /// Slice events by resourceVersion; older ones are compacted away.
    events: Vec<(u64, Value)>,
    compacted_below: u64,
    leases: BTreeMap<String, Value>,
    down: bool,
    /// Every request, in order: `METHOD path[?watch]`.
    log: Vec<String>,
}

/// The fake; clone it freely.
#[derive(Clone)]
pub struct FakeCluster {
    state: Arc<Mutex<State>>,
    changed: Arc<Notify>,
    pub start_delay: Duration,
    pub grace: Duration,
}

impl FakeCluster {
    /// Serves `handle` with `replicas` ready pods, and runs the controller
    /// every 100 ms (bounded: 20 000 rounds).
    pub fn start(handle: ApiHandle, replicas: i64) -> (Self, JoinHandle<()>) {
        let cluster = FakeCluster {
            state: Arc::new(Mutex::new(State {
                rv: 100,
                desired: replicas,
                scale_rv: 100,
                ..State::default()
            })),
            changed: Arc::new(Notify::new()),
            start_delay: Duration::from_secs(1),
            grace: Duration::from_secs(2),
        };
        {
            let mut s = cluster.state.lock();
            let now = Instant::now();
            for _ in 0..replicas {
                cluster.create_pod(&mut s, now);
            }
            cluster.write_slice(&mut s, now);
        }
        let controller = cluster.clone();
        tokio::spawn(async move {
            for _ in 0..20_000 {
                tokio::time::sleep(Duration::from_millis(100)).await;
                controller.reconcile();
            }
        });
        let server = cluster.clone();
        let serving = tokio::spawn(async move {
            let mut handle = handle;
            while let Some((request, send)) = handle.next_request().await {
                let cluster = server.clone();
                tokio::spawn(async move {
                    let seen = read(request).await;
                    let watch = if seen.param("watch").as_deref() == Some("true") {
                        "?watch"
                    } else {
                        ""
                    };
                    cluster
                        .state
                        .lock()
                        .log
                        .push(format!("{}{watch}", seen.line()));
                    if cluster.state.lock().down {
                        send.send_error(std::io::Error::new(
                            std::io::ErrorKind::ConnectionRefused,
                            "connection refused",
                        ));
                        return;
                    }
                    match cluster.route(&seen) {
                        Route::Answer(status, body) => {
                            send.send_response(answer(status, body.to_string()))
                        }
                        Route::Watch(from, timeout) => {
                            let (response, tx) = streamed();
                            send.send_response(response);
                            cluster.stream_watch(from, timeout, tx).await;
                        }
                    }
                });
            }
        });
        (cluster, serving)
    }

    /// Makes the API server unreachable (requests fail in transport, open
    /// watches end) or reachable again.
    pub fn set_down(&self, down: bool) {
        self.state.lock().down = down;
        self.changed.notify_waiters();
    }

    /// Compacts every event so far away: the next watch from an older
    /// `resourceVersion` gets 410 Gone.
    pub fn compact(&self) {
        let mut s = self.state.lock();
        s.rv += 1;
        s.compacted_below = s.rv;
        s.events.clear();
        drop(s);
        self.changed.notify_waiters();
    }

    /// Pods alive (not terminating), by name.
    pub fn live_pods(&self) -> Vec<String> {
        let s = self.state.lock();
        s.pods
            .iter()
            .filter(|(_, p)| p.terminating_until.is_none())
            .map(|(n, _)| n.clone())
            .collect()
    }

    /// Whether the pod exists (running or terminating within its grace).
    pub fn has_pod(&self, name: &str) -> bool {
        self.state.lock().pods.contains_key(name)
    }

    pub fn desired(&self) -> i64 {
        self.state.lock().desired
    }

    /// The requests served so far, as `METHOD path` (`?watch` after a
    /// watch's path).
    pub fn log(&self) -> Vec<String> {
        self.state.lock().log.clone()
    }

    fn bump(s: &mut State) -> u64 {
        s.rv += 1;
        s.rv
    }

    fn create_pod(&self, s: &mut State, now: Instant) {
        s.next_pod += 1;
        let n = s.next_pod;
        s.pods.insert(
            format!("{NAME}-{n}"),
            Pod {
                ip: format!("10.1.0.{n}"),
                created: n,
                ready_at: now,
                terminating_until: None,
                annotations: serde_json::Map::new(),
            },
        );
    }

    /// One round of the ReplicaSet and EndpointSlice controllers.
    fn reconcile(&self) {
        let now = Instant::now();
        let mut s = self.state.lock();
        let before = s.slice.clone();
        let live = s
            .pods
            .values()
            .filter(|p| p.terminating_until.is_none())
            .count() as i64;
        if s.desired > live {
            for _ in live..s.desired {
                self.create_pod(&mut s, now);
                let n = s.next_pod;
                s.pods.get_mut(&format!("{NAME}-{n}")).unwrap().ready_at = now + self.start_delay;
            }
        } else if s.desired < live {
            let mut ranked: Vec<(bool, i64, std::cmp::Reverse<u32>, String)> = s
                .pods
                .iter()
                .filter(|(_, p)| p.terminating_until.is_none())
                .map(|(n, p)| {
                    (
                        p.ready(now),
                        p.cost(),
                        std::cmp::Reverse(p.created),
                        n.clone(),
                    )
                })
                .collect();
            ranked.sort();
            for (_, _, _, name) in ranked.into_iter().take((live - s.desired) as usize) {
                s.pods.get_mut(&name).unwrap().terminating_until = Some(now + self.grace);
            }
        }
        s.pods
            .retain(|_, p| p.terminating_until.is_none_or(|t| now < t));
        self.write_slice(&mut s, now);
        if s.slice != before {
            drop(s);
            self.changed.notify_waiters();
        }
    }

    fn write_slice(&self, s: &mut State, now: Instant) {
        let endpoints: Vec<Value> = s
            .pods
            .iter()
            .map(|(name, p)| {
                let terminating = p.terminating_until.is_some();
                json!({
                    "addresses": [p.ip],
                    "conditions": { "ready": p.ready(now) && !terminating, "serving": p.ready(now), "terminating": terminating },
                    "targetRef": { "kind": "Pod", "namespace": NS, "name": name },
                })
            })
            .collect();
        let same = s
            .slice
            .get("endpoints")
            .is_some_and(|e| *e == Value::Array(endpoints.clone()));
        if same {
            return;
        }
        let rv = Self::bump(s);
        s.slice = json!({
            "kind": "EndpointSlice",
            "apiVersion": "discovery.k8s.io/v1",
            "metadata": {
                "name": format!("{NAME}-abcde"),
                "namespace": NS,
                "resourceVersion": rv.to_string(),
                "labels": { "kubernetes.io/service-name": NAME },
            },
            "addressType": "IPv4",
            "ports": [{ "name": "http", "port": 8080, "protocol": "TCP" }],
            "endpoints": endpoints,
        });
        let event = json!({ "type": "MODIFIED", "object": s.slice });
        s.events.push((rv, event));
    }

    fn route(&self, r: &Seen) -> Route {
        let scale = format!("/apis/apps/v1/namespaces/{NS}/deployments/{NAME}/scale");
        let pods = format!("/api/v1/namespaces/{NS}/pods");
        let slices = format!("/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices");
        let leases = format!("/apis/coordination.k8s.io/v1/namespaces/{NS}/leases");
        let mut s = self.state.lock();
        match (&r.method, r.path.as_str()) {
            (&Method::GET, p) if p == scale => Route::Answer(200, Self::scale(&s)),
            (&Method::PATCH, p) if p == scale => {
                let wanted = r.body["metadata"]["resourceVersion"].as_str();
                if wanted.is_some_and(|rv| rv != s.scale_rv.to_string()) {
                    return Route::Answer(409, status(409, "Conflict"));
                }
                if let Some(n) = r.body["spec"]["replicas"].as_i64() {
                    s.desired = n;
                    s.scale_rv = Self::bump(&mut s);
                }
                Route::Answer(200, Self::scale(&s))
            }
            (&Method::GET, p) if p == pods => {
                let now = Instant::now();
                let items: Vec<Value> = s
                    .pods
                    .iter()
                    .map(|(name, p)| {
                        let mut meta = json!({ "name": name, "namespace": NS, "annotations": p.annotations });
                        if p.terminating_until.is_some() {
                            meta["deletionTimestamp"] = json!("2026-12-01T10:00:00Z");
                        }
                        json!({ "metadata": meta, "status": { "phase": "Running", "podIP": p.ip, "ready": p.ready(now) } })
                    })
                    .collect();
                Route::Answer(
                    200,
                    json!({ "kind": "PodList", "apiVersion": "v1", "metadata": { "resourceVersion": s.rv.to_string() }, "items": items }),
                )
            }
            (&Method::PATCH, p) if p.starts_with(&format!("{pods}/")) => {
                let name = &p[pods.len() + 1..];
                let Some(pod) = s.pods.get_mut(name) else {
                    return Route::Answer(404, status(404, "NotFound"));
                };
                let mut meta = json!({ "annotations": pod.annotations });
                merge_patch(&mut meta, &r.body["metadata"]);
                pod.annotations = meta["annotations"].as_object().cloned().unwrap_or_default();
                Route::Answer(
                    200,
                    json!({ "kind": "Pod", "apiVersion": "v1", "metadata": { "name": name, "namespace": NS } }),
                )
            }
            (&Method::GET, p) if p == slices => {
                if r.param("watch").as_deref() == Some("true") {
                    let from: u64 = r
                        .param("resourceVersion")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(0);
                    if from < s.compacted_below {
                        return Route::Answer(410, status(410, "Expired"));
                    }
                    let timeout = r
                        .param("timeoutSeconds")
                        .and_then(|v| v.parse().ok())
                        .unwrap_or(290);
                    return Route::Watch(from, timeout);
                }
                Route::Answer(
                    200,
                    json!({ "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": s.rv.to_string() }, "items": [s.slice] }),
                )
            }
            (&Method::GET, p) if p.starts_with(&format!("{leases}/")) => {
                match s.leases.get(&p[leases.len() + 1..]) {
                    Some(lease) => Route::Answer(200, lease.clone()),
                    None => Route::Answer(404, status(404, "NotFound")),
                }
            }
            (&Method::POST, p) if p == leases => {
                let name = r.body["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if s.leases.contains_key(&name) {
                    return Route::Answer(409, status(409, "AlreadyExists"));
                }
                let mut lease = r.body.clone();
                lease["metadata"]["resourceVersion"] = json!(Self::bump(&mut s).to_string());
                s.leases.insert(name, lease.clone());
                Route::Answer(201, lease)
            }
            (&Method::PUT, p) if p.starts_with(&format!("{leases}/")) => {
                let name = p[leases.len() + 1..].to_owned();
                let current = s
                    .leases
                    .get(&name)
                    .map(|l| l["metadata"]["resourceVersion"].clone());
                if current.as_ref() != Some(&r.body["metadata"]["resourceVersion"]) {
                    return Route::Answer(409, status(409, "Conflict"));
                }
                let mut lease = r.body.clone();
                lease["metadata"]["resourceVersion"] = json!(Self::bump(&mut s).to_string());
                s.leases.insert(name, lease.clone());
                Route::Answer(200, lease)
            }
            _ => Route::Answer(404, status(404, "NotFound")),
        }
    }

    fn scale(s: &State) -> Value {
        let observed = s
            .pods
            .values()
            .filter(|p| p.terminating_until.is_none())
            .count();
        json!({
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": { "name": NAME, "namespace": NS, "resourceVersion": s.scale_rv.to_string() },
            "spec": { "replicas": s.desired },
            "status": { "replicas": observed, "selector": format!("app.kubernetes.io/name={NAME}") },
        })
    }

    /// Streams the slice events after `from` until `timeout` seconds pass,
    /// then a bookmark at the current version; ends early when the server
    /// goes down or the events are compacted (an ERROR 410 event).
    async fn stream_watch(
        &self,
        mut from: u64,
        timeout: u64,
        tx: tokio::sync::mpsc::Sender<Bytes>,
    ) {
        let deadline = Instant::now() + Duration::from_secs(timeout);
        loop {
            let notified = self.changed.notified();
            let (pending, gone, down) = {
                let s = self.state.lock();
                let pending: Vec<(u64, Value)> = s
                    .events
                    .iter()
                    .filter(|(rv, _)| *rv > from)
                    .cloned()
                    .collect();
                (pending, from < s.compacted_below, s.down)
            };
            if down {
                return;
            }
            if gone {
                let event = json!({ "type": "ERROR", "object": status(410, "Expired") });
                let _ = tx.send(Bytes::from(format!("{event}\n"))).await;
                return;
            }
            for (rv, event) in pending {
                if tx.send(Bytes::from(format!("{event}\n"))).await.is_err() {
                    return;
                }
                from = rv;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                let rv = self.state.lock().rv;
                let bookmark = json!({ "type": "BOOKMARK", "object": { "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": rv.to_string() } } });
                let _ = tx.send(Bytes::from(format!("{bookmark}\n"))).await;
                return;
            }
        }
    }
}

enum Route {
    Answer(u16, Value),
    Watch(u64, u64),
}

fn status(code: u16, reason: &str) -> Value {
    json!({ "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": reason, "reason": reason, "code": code })
}
