//! The front's autoscaler end to end with real node processes: a real etcd
//! on loopback, node processes of the server started and stopped by a
//! test scaler (the `Scaler` a Kubernetes front gets from convoy-kube),
//! registering themselves in etcd, and the front (built from its TOML, in
//! this process) scaling them on the in-flight requests it reads from the
//! nodes' `/metrics`.
//!
//! * Scale from zero: requests wait in the bounded cold-start queue while
//!   one node starts (beyond the bound: 503 with `Retry-After` at once),
//!   and are all served; idle, the version goes back to zero and a new
//!   request brings a node again.
//! * Scale up under load and a planned scale-down: the timings decision →
//!   scale write → node ready → serving at the front → first request
//!   served on the new node are printed (never asserted); every request
//!   sent through the scale-down is answered (sent = answered ok).
//!
//! Needs no root (the nodes listen on loopback); needs etcd.

use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::{ReplicaCounts, Scaler};
use example_multi_model::remote::{Front, Scalers};
use example_multi_model::Config;
use futures::future::BoxFuture;
use parking_lot::Mutex;
use testkit::ServerProcess;
use tokio::time::Instant;
use tower::BoxError;

mod cluster;
use cluster::{
    client, infer, raise_until_scale_up, serving, serving_then_served, until, Etcd, Load,
    NODE_CONFIG,
};

const NODE: &str = env!("CARGO_BIN_EXE_multi-model");

/// The tests run one at a time: their nodes would share the two cores.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// What the scaler did, and when.
#[derive(Debug, Clone)]
enum Event {
    /// `scale_to(n)` was called.
    Write(u32),
    /// A node process listens and is registered (its id and address).
    Ready(String, String),
    /// A node was sent SIGTERM.
    Stopping(String),
}

/// Starts and stops node processes on loopback; each registers itself in
/// etcd, where the front finds it.
struct ProcessScaler {
    inner: Arc<Inner>,
}

struct Inner {
    etcd: String,
    config: PathBuf,
    state: Mutex<State>,
    events: Mutex<Vec<(Instant, Event)>>,
    next: AtomicUsize,
    stopped: Mutex<Vec<tokio::task::JoinHandle<ExitStatus>>>,
}

#[derive(Default)]
struct State {
    desired: u32,
    starting: u32,
    running: Vec<(String, ServerProcess)>,
}

impl Inner {
    fn event(&self, e: Event) {
        self.events.lock().push((Instant::now(), e));
    }

    fn scale_to(self: &Arc<Self>, n: u32) {
        self.event(Event::Write(n));
        let mut s = self.state.lock();
        let have = s.running.len() as u32 + s.starting;
        for _ in have..n {
            s.starting += 1;
            let me = self.clone();
            tokio::task::spawn_blocking(move || me.start_one());
        }
        for _ in n..have {
            let Some((id, node)) = s.running.pop() else {
                break;
            };
            self.event(Event::Stopping(id));
            // SIGTERM: the node deregisters, finishes what it admitted, exits.
            let stop = tokio::task::spawn_blocking(move || node.terminate());
            self.stopped.lock().push(stop);
        }
        s.desired = n;
    }

    fn start_one(&self) {
        let id = format!("n{}", self.next.fetch_add(1, Ordering::Relaxed));
        let started = ServerProcess::command(NODE)
            .arg("--config")
            .arg(&self.config)
            .args(["--addr", "127.0.0.1:0", "--etcd", &self.etcd])
            .args([
                "--node-id",
                &id,
                "--lease-ttl",
                "2",
                "--drain-grace-ms",
                "300",
            ])
            .start_timeout(Duration::from_secs(60))
            .start();
        let mut s = self.state.lock();
        s.starting -= 1;
        match started {
            Ok(node) => {
                self.event(Event::Ready(id.clone(), node.base().to_string()));
                s.running.push((id, node));
            }
            Err(e) => panic!("node {id}: {e}"),
        }
    }
}

impl Scaler for ProcessScaler {
    fn replicas(&self) -> ReplicaCounts {
        let s = self.inner.state.lock();
        ReplicaCounts::new(s.desired, s.running.len() as u32)
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        self.inner.scale_to(n);
        Box::pin(async { Ok(()) })
    }
}

impl ProcessScaler {
    fn new(etcd: &Etcd, config: PathBuf) -> Arc<Self> {
        Arc::new(Self {
            inner: Arc::new(Inner {
                etcd: etcd.url(),
                config,
                state: Mutex::default(),
                events: Mutex::default(),
                next: AtomicUsize::new(0),
                stopped: Mutex::default(),
            }),
        })
    }

    fn events(&self) -> Vec<(Instant, Event)> {
        self.inner.events.lock().clone()
    }

    fn running(&self) -> usize {
        self.inner.state.lock().running.len()
    }

    /// Waits for every stopped node's exit; their statuses.
    async fn stopped(&self) -> Vec<ExitStatus> {
        let handles: Vec<_> = self.inner.stopped.lock().drain(..).collect();
        let mut out = Vec::new();
        for h in handles {
            out.push(h.await.unwrap());
        }
        out
    }
}

/// The test's world: etcd, the nodes' configuration, the scaler, the
/// front serving on loopback.
struct World {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    _etcd: Etcd,
    _dir: tempfile::TempDir,
    scaler: Arc<ProcessScaler>,
    front: Front,
    base: String,
}

async fn world(remote: &str) -> World {
    let serial = SERIAL.lock().await;
    let etcd = Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, NODE_CONFIG).unwrap();
    let scaler = ProcessScaler::new(&etcd, config);
    let text = format!(
        "[server]\nrequest_timeout = \"30s\"\n\n[[deployment]]\nname = \"identity\"\n\n[deployment.remote]\netcd = {{ url = \"{}\" }}\n{remote}",
        etcd.url()
    );
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let mut scalers = Scalers::new();
    scalers.insert(
        ("identity".into(), "1".into()),
        scaler.clone() as Arc<dyn Scaler>,
    );
    let front = Front::from_config(&config, scalers).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let app = front.clone().router();
    tokio::spawn(async move { axum::serve(listener, app).await });
    World {
        _serial: serial,
        _etcd: etcd,
        _dir: dir,
        scaler,
        front,
        base,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn from_zero_requests_wait_in_a_bounded_queue_while_one_node_starts() {
    let w = world(
        "cold_start_queue = 4\ncold_start_timeout = \"40s\"\n\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmin = 0\nmax = 1\ninterval = \"200ms\"\nlook_back = \"1s\"\ndownscale_delay = \"1s\"\n",
    )
    .await;
    // Idle and at zero: nothing started.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(w.scaler.running(), 0);
    assert_eq!(w.scaler.replicas().current, 0);

    // Six requests at once: four wait for the node the first one asks
    // for, two find the queue full and are refused at once.
    let client = client();
    let sent = Instant::now();
    let requests: Vec<_> = (0..6)
        .map(|_| {
            let (client, base) = (client.clone(), w.base.clone());
            tokio::spawn(async move {
                let answer = infer(&client, &base).await;
                (answer, sent.elapsed())
            })
        })
        .collect();
    let mut answers = Vec::new();
    for r in requests {
        answers.push(r.await.unwrap());
    }
    let refused: Vec<_> = answers.iter().filter(|((s, _), _)| *s == 503).collect();
    let served: Vec<_> = answers.iter().filter(|((s, _), _)| *s == 200).collect();
    assert_eq!(refused.len(), 2, "{answers:?}");
    assert_eq!(served.len(), 4, "{answers:?}");
    for ((_, retry), _) in &refused {
        assert_eq!(retry.as_deref(), Some("1"));
    }
    let events = w.scaler.events();
    let write = events
        .iter()
        .find(|(_, e)| matches!(e, Event::Write(1)))
        .map(|(t, _)| *t - sent)
        .expect("the scaler was asked for a node");
    let ready = events
        .iter()
        .find(|(_, e)| matches!(e, Event::Ready(..)))
        .map(|(t, _)| *t - sent)
        .expect("a node started");
    let refused_after = refused.iter().map(|(_, t)| *t).max().unwrap();
    let first = served.iter().map(|(_, t)| *t).min().unwrap();
    println!(
        "scale from zero: 6 requests at once, queue 4: 2 refused 503 after {refused_after:?}; scale write after {write:?}, node ready (listening, registered) after {ready:?}, the 4 waiting served after {first:?} .. {:?}",
        served.iter().map(|(_, t)| *t).max().unwrap()
    );
    assert!(
        refused_after < first,
        "the refused requests waited for the node"
    );

    // Idle: back to zero after the downscale delay; the node drains.
    until("scaled back to zero", Duration::from_secs(20), || {
        w.scaler.running() == 0
    })
    .await;
    let stopped = w.scaler.stopped().await;
    assert!(stopped.iter().all(ExitStatus::success), "{stopped:?}");
    until("the front sees no node", Duration::from_secs(10), || {
        serving(&w.front) == 0
    })
    .await;

    // And a new request brings a node again.
    let again = Instant::now();
    let (status, _) = infer(&client, &w.base).await;
    assert_eq!(status, 200);
    println!(
        "from zero again: one request served after {:?}",
        again.elapsed()
    );
    w.front.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_adds_nodes_that_serve_and_a_planned_scale_down_loses_nothing() {
    let w = world(
        "\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmin = 1\nmax = 3\ntarget_ongoing = 8\ninterval = \"250ms\"\nlook_back = \"1s\"\ndownscale_delay = \"1s\"\n",
    )
    .await;
    until("the first node serves", Duration::from_secs(60), || {
        serving(&w.front) == 1
    })
    .await;
    let load = Load::start(&w.base, 24);
    load.set(4);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(w.scaler.running(), 1, "4 in flight need one node");

    // 24 in flight at 8 per node: up to 3.
    let (high, decided) = raise_until_scale_up(&w.front, &load, 24).await;
    let decided_at = Instant::now();
    let new_node = {
        let mut found = None;
        let deadline = Instant::now() + Duration::from_secs(60);
        while found.is_none() {
            assert!(Instant::now() < deadline, "no new node within 60 s");
            found = w.scaler.events().into_iter().find_map(|(t, e)| match e {
                Event::Ready(id, base) if id != "n0" => Some((t, id, base)),
                _ => None,
            });
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        found.unwrap()
    };
    let (ready_at, id, node_base) = new_node;
    let write_at = w
        .scaler
        .events()
        .into_iter()
        .find(|(_, e)| matches!(e, Event::Write(n) if *n > 1))
        .map(|(t, _)| t)
        .unwrap();
    let (serving_at, first_served_at) = serving_then_served(&w.front, &id, &node_base).await;
    println!(
        "scale-up 1 -> {decided} nodes under 24 in flight: decision {:?} after the load rose; scale write +{:?}; node {id} ready (started, listening, registered) +{:?}; serving at the front +{:?}; first request served on it +{:?} (decision to first request {:?})",
        decided_at - high,
        write_at.saturating_duration_since(decided_at),
        ready_at.saturating_duration_since(write_at),
        serving_at.saturating_duration_since(ready_at),
        first_served_at.saturating_duration_since(serving_at),
        first_served_at.saturating_duration_since(decided_at),
    );
    until("three nodes serve", Duration::from_secs(60), || {
        serving(&w.front) == 3
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Load falls to 3 in flight: a planned scale-down to one node, every
    // request answered through it.
    load.set(3);
    let low = Instant::now();
    until("scaled down to one node", Duration::from_secs(20), || {
        w.scaler.running() == 1
    })
    .await;
    let down_after = low.elapsed();
    let stopped = w.scaler.stopped().await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (sent, ok) = load.finish().await;
    let gone: Vec<String> = w
        .scaler
        .events()
        .into_iter()
        .filter_map(|(_, e)| match e {
            Event::Stopping(id) => Some(id),
            _ => None,
        })
        .collect();
    println!(
        "planned scale-down 3 -> 1 after the load fell (nodes {gone:?} stopped {down_after:?} after, drained on SIGTERM): {sent} requests sent over the whole run, {ok} answered ok, {} lost",
        sent - ok
    );
    assert_eq!(stopped.len(), 2, "two nodes stopped");
    assert!(stopped.iter().all(ExitStatus::success), "{stopped:?}");
    assert_eq!(ok, sent, "requests lost through a planned scale-down");
    assert_eq!(serving(&w.front), 1);
    w.front.shutdown();
}
