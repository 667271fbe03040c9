//! The server following a REAL MLflow registry (the `.venv`'s `mlflow
//! server`, sqlite store, local artifacts, killed afterwards) under
//! continuous load, with tiny TorchScript classifiers exported by
//! `scripts/python/export_tiny.py` (v1; v2 with other weights but the same
//! predictions; a drifting one; one that fails every real request; and an
//! artifact that is not TorchScript at all):
//!
//! 1. v1 → v2 by moving the alias: promoted through every step with ZERO
//!    failed requests, the answers' `model_version` moving with the steps.
//! 2. v3 fails every request: rolled back by the error-rate analysis; the
//!    failures clients see are the canary's requests until the verdict.
//! 3. v4 answers other classes: rolled back by the drift check, with the
//!    top-1 agreement figure in the reason; no request fails.
//! 4. v5 does not load: refused with the reason; v2 keeps serving.
//! 5. The registry stops: serving untouched; it returns: the watcher
//!    recovers and follows the next promotion (v6).
//! 6. A restarted server serves v6 from its cache.
//!
//! The figures (requests, failures, step timings, the drift figure) are
//! printed; run with `--nocapture` to read them.

#[path = "../../registry/tests/support/mlflow.rs"]
mod mlflow;

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::Running;
use parking_lot::Mutex;
use serde_json::Value;
use tokio::time::Instant;

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Exports the tiny model variants into `dir` with the project's Python.
fn export_tiny(dir: &Path) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/python/export_tiny.py"))
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .status()
        .expect(".venv/bin/python runs (scripts/setup.sh creates it)");
    assert!(status.success(), "export_tiny.py failed");
}

/// One answer seen by the load: when, and the version or the failure.
#[derive(Debug, Clone)]
struct Outcome {
    at_ms: u64,
    version: Result<String, String>,
}

/// Clients sending requests back to back until stopped.
struct Load {
    outcomes: Arc<Mutex<Vec<Outcome>>>,
    stop: Arc<AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

fn request(i: u64) -> String {
    // Every request holds a negative value (the bad version fails on it).
    let x: Vec<f32> = (0..8)
        .map(|j| (((i * 31 + j * 17) % 200) as f32 / 100.0) - 1.0)
        .enumerate()
        .map(|(j, v)| if j == 0 { -v.abs() - 0.1 } else { v })
        .collect();
    serde_json::json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [1, 8], "data": x}]})
        .to_string()
}

impl Load {
    fn start(server: &Arc<Running>, clients: usize) -> Self {
        let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = (0..clients as u64)
            .map(|c| {
                let (server, outcomes, stop) =
                    (Arc::clone(server), Arc::clone(&outcomes), Arc::clone(&stop));
                tokio::spawn(async move {
                    let mut i = c * 1_000_000;
                    while !stop.load(Ordering::Relaxed) {
                        i += 1;
                        let r = server.post("/v2/models/tiny/infer", request(i)).await;
                        let version = if r.status.is_success() {
                            Ok(r.json()["model_version"]
                                .as_str()
                                .unwrap_or("?")
                                .to_string())
                        } else {
                            Err(format!("{} {}", r.status, String::from_utf8_lossy(&r.body)))
                        };
                        outcomes.lock().push(Outcome {
                            at_ms: now_ms(),
                            version,
                        });
                    }
                })
            })
            .collect();
        Self {
            outcomes,
            stop,
            tasks,
        }
    }

    fn since(&self, from_ms: u64) -> Vec<Outcome> {
        self.outcomes
            .lock()
            .iter()
            .filter(|o| o.at_ms >= from_ms)
            .cloned()
            .collect()
    }

    async fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
    }
}

fn failures(outcomes: &[Outcome]) -> Vec<&Outcome> {
    outcomes.iter().filter(|o| o.version.is_err()).collect()
}

fn answered_by(outcomes: &[Outcome], v: &str) -> usize {
    outcomes
        .iter()
        .filter(|o| o.version.as_deref() == Ok(v))
        .count()
}

fn tiny(models: &Value) -> Value {
    models["models"][0].clone()
}

/// Waits (at most 60 s) until the rollout of `canary` has ended, and
/// returns the deployment as `/v1/models` shows it. The KServe v2
/// metadata must have shown the rollout too: both versions and its state
/// while it ran, one version and the end state after.
async fn rollout_of(server: &Running, canary: &str) -> Value {
    let started = Instant::now();
    let (mut seen_both, mut seen_v2) = (false, false);
    loop {
        let d = tiny(&server.models().await);
        let r = &d["rollout"];
        if r["canary"] == canary {
            let state = r["state"].as_str().unwrap();
            if state == "progressing" && d["versions"].as_array().unwrap().len() == 2 {
                seen_both = true;
                // The rollout may move on between the two reads: any state
                // while both versions serve will do.
                let meta = server.get("/v2/models/tiny").await.json();
                let rollout = &meta["parameters"]["rollout"];
                assert_eq!(rollout["canary"], canary, "{meta:#}");
                if meta["versions"].as_array().unwrap().len() == 2 {
                    assert_ne!(rollout["state"], "starting", "{meta:#}");
                    seen_v2 = true;
                }
            }
            if (state == "promoted" || state == "rolled_back")
                && d["versions"].as_array().unwrap().len() == 1
            {
                assert!(seen_both, "/v1/models never showed both versions: {d:#}");
                assert!(seen_v2, "the v2 metadata never showed the rollout: {d:#}");
                let meta = server.get("/v2/models/tiny").await.json();
                assert_eq!(meta["parameters"]["rollout"]["state"], state, "{meta:#}");
                assert_eq!(meta["versions"].as_array().unwrap().len(), 1, "{meta:#}");
                return d;
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "rollout of {canary} not over in 60 s: {d:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (at most 60 s) for registry news containing `what`.
async fn news(server: &Running, what: &str) -> String {
    let started = Instant::now();
    loop {
        let d = tiny(&server.models().await);
        if let Some(n) = d["registry"]
            .as_array()
            .unwrap_or(&Vec::new())
            .iter()
            .filter_map(Value::as_str)
            .find(|n| n.contains(what))
        {
            return n.to_string();
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "no registry news {what:?} in 60 s: {:#}",
            d["registry"]
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn events(d: &Value) -> Vec<(u64, String, f64, String)> {
    d["rollout"]["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["at_ms"].as_u64().unwrap(),
                e["kind"].as_str().unwrap().to_string(),
                e["canary_percent"].as_f64().unwrap(),
                e["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn config(uri: &str, cache: &Path) -> String {
    format!(
        r#"
[server]
addr = "127.0.0.1:0"
request_timeout = "10s"
host_memory = 268435456

[server.registry]
uri = "{uri}"
cache_dir = "{cache}"
poll_interval = "200ms"
timeout = "3s"

[[deployment]]
name = "tiny"
source = "models:/tiny@champion"

[deployment.rollout]
steps = [25, 50, 100]
step = "600ms"
analysis_interval = "100ms"
min_samples = 20
max_error_rate = 0.05
max_p99 = "2s"
failure_limit = 1
rollback_steps = 2
rollback_interval = "100ms"

[deployment.rollout.drift]
min_pairs = 20
min_top1_agreement = 0.9

[deployment.batching]
max_batch_size = 8
max_wait = "1ms"

[deployment.device]
kind = "cpu"
"#,
        cache = cache.display()
    )
}

async fn publish(m: &mlflow::Mlflow, dir: &Path) -> u64 {
    m.client().publish_dir("tiny", dir).await.unwrap().version
}

async fn promote(m: &mlflow::Mlflow, version: u64) {
    m.client()
        .set_alias("tiny", "champion", version)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn promotions_rollbacks_refusals_and_outages_under_load() {
    let tmp = tempfile::tempdir().unwrap();
    let models = tmp.path().join("tiny");
    export_tiny(&models);
    let mut registry = mlflow::Mlflow::start(&tmp.path().join("mlflow"));
    assert_eq!(publish(&registry, &models.join("v1")).await, 1);
    promote(&registry, 1).await;

    let server = Arc::new(common::start(&config(&registry.uri(), &tmp.path().join("cache"))).await);
    let d = tiny(&server.models().await);
    assert_eq!(d["source"], "models:/tiny@champion");
    assert_eq!(d["versions"][0]["name"], "1");
    // The version's weights were loaded into its own tenant.
    assert!(
        d["versions"][0]["tenant_bytes_in_use"].as_u64().unwrap() > 0,
        "{d:#}"
    );
    assert!(tmp.path().join("cache/tiny/1/model.pt").is_file());
    let load = Load::start(&server, 2);
    tokio::time::sleep(Duration::from_millis(300)).await;

    // 1. A promotion under continuous load: no request fails.
    let t0 = now_ms();
    assert_eq!(publish(&registry, &models.join("v2")).await, 2);
    promote(&registry, 2).await;
    let d = rollout_of(&server, "2").await;
    let t1 = now_ms();
    let ev = events(&d);
    assert_eq!(d["rollout"]["state"], "promoted", "{d:#}");
    assert_eq!(d["versions"][0]["name"], "2");
    // Loaded while serving, into its own tenant (tiny/2): its weights.
    assert!(
        d["versions"][0]["tenant_bytes_in_use"].as_u64().unwrap() > 0,
        "{d:#}"
    );
    let page = String::from_utf8_lossy(&server.get("/metrics").await.body).into_owned();
    assert!(
        page.lines()
            .any(|l| l.starts_with("convoy_gpu_pool_bytes_in_use{")
                && l.contains("tenant=\"tiny/2\"")
                && !l.ends_with(" 0")),
        "tiny/2 in use on /metrics"
    );
    let steps: Vec<f64> = ev
        .iter()
        .filter(|e| e.1 == "StepStarted")
        .map(|e| e.2)
        .collect();
    assert_eq!(steps, [25.0, 50.0, 100.0], "{ev:#?}");
    let during = load.since(t0);
    assert!(failures(&during).is_empty(), "{:?}", failures(&during));
    // Traffic followed the steps: within each step's window the share of
    // answers from v2 is near the step's percentage.
    let start = d["rollout"]["started_unix_ms"].as_u64().unwrap();
    let starts: Vec<u64> = ev
        .iter()
        .filter(|e| e.1 == "StepStarted" || e.1 == "Promoted")
        .map(|e| start + e.0)
        .collect();
    println!(
        "promotion 1 -> 2: {} requests between the alias moving and the end, 0 failures",
        during.len()
    );
    for (i, w) in starts.windows(2).enumerate() {
        let window: Vec<Outcome> = during
            .iter()
            .filter(|o| o.at_ms >= w[0] && o.at_ms < w[1])
            .cloned()
            .collect();
        let share = answered_by(&window, "2") as f64 / window.len().max(1) as f64;
        println!(
            "  step {} ({}%): {} ms, {} requests, {:.1}% answered by v2",
            i + 1,
            steps[i],
            w[1] - w[0],
            window.len(),
            share * 100.0
        );
        if window.len() >= 40 && steps[i] < 100.0 {
            let want = steps[i] / 100.0;
            assert!(
                (share - want).abs() < 0.2,
                "step {}: share {share}",
                steps[i]
            );
        }
    }
    for e in &ev {
        println!("  +{:>5} ms {:<15} {:>5}% {}", e.0, e.1, e.2, e.3);
    }
    println!("  alias moved -> rollout over: {} ms", t1 - t0);
    assert!(answered_by(&during, "1") > 0 && answered_by(&during, "2") > 0);
    let after = now_ms();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(answered_by(&load.since(after), "1"), 0, "v1 retired");

    // 2. A version failing every request is rolled back; v2 keeps serving.
    let t0 = now_ms();
    assert_eq!(publish(&registry, &models.join("bad")).await, 3);
    promote(&registry, 3).await;
    let d = rollout_of(&server, "3").await;
    assert_eq!(d["rollout"]["state"], "rolled_back", "{d:#}");
    assert_eq!(d["versions"][0]["name"], "2");
    let reason = d["rollout"]["last_reason"].as_str().unwrap();
    assert!(reason.contains("error rate"), "{reason}");
    let during = load.since(t0);
    let failed = failures(&during).len();
    println!(
        "bad version 3: {} requests, {failed} failed, rolled back: {reason}",
        during.len()
    );
    for e in events(&d) {
        println!("  +{:>5} ms {:<15} {:>5}% {}", e.0, e.1, e.2, e.3);
    }
    // The analysis needs 20 canary samples for its verdict, and the canary
    // had 25 % of the traffic at most.
    assert!(failed >= 20, "{failed}");
    let rollback_end = start_of_end(&d);
    let window = during.iter().filter(|o| o.at_ms <= rollback_end).count();
    assert!(
        failed as f64 <= 0.25 * window as f64 + 5.0,
        "{failed} of {window}"
    );
    let after = now_ms();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = load.since(after);
    assert!(failures(&later).is_empty() && answered_by(&later, "2") == later.len());

    // 3. A drifting version is rolled back by the drift check.
    let t0 = now_ms();
    assert_eq!(publish(&registry, &models.join("drift")).await, 4);
    promote(&registry, 4).await;
    let d = rollout_of(&server, "4").await;
    assert_eq!(d["rollout"]["state"], "rolled_back", "{d:#}");
    let reason = d["rollout"]["last_reason"].as_str().unwrap();
    assert!(reason.contains("drift: top-1 agreement"), "{reason}");
    let during = load.since(t0);
    assert!(failures(&during).is_empty(), "{:?}", failures(&during));
    println!(
        "drifting version 4: {} requests, 0 failed, rolled back: {reason}",
        during.len()
    );

    // 4. An artifact that does not load is refused; v2 keeps serving.
    let broken = tmp.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(models.join("v1/model.json"), broken.join("model.json")).unwrap();
    std::fs::write(broken.join("model.pt"), "not TorchScript").unwrap();
    let t0 = now_ms();
    assert_eq!(publish(&registry, &broken).await, 5);
    promote(&registry, 5).await;
    let refused = news(&server, "version 5 refused").await;
    assert!(refused.contains("does not load"), "{refused}");
    println!("broken version 5: {refused}");
    assert!(!tmp.path().join("cache/tiny/5").exists());
    let d = tiny(&server.models().await);
    assert_eq!(d["versions"].as_array().unwrap().len(), 1);
    assert_eq!(d["versions"][0]["name"], "2");
    let during = load.since(t0);
    assert!(failures(&during).is_empty() && answered_by(&during, "2") == during.len());

    // 5. The registry goes away: serving continues; it comes back: the
    // watcher follows the next promotion.
    registry.stop();
    let t0 = now_ms();
    news(&server, "registry unavailable").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let during = load.since(t0);
    assert!(!during.is_empty() && failures(&during).is_empty());
    assert_eq!(answered_by(&during, "2"), during.len());
    println!(
        "registry down: {} requests answered by v2, 0 failed",
        during.len()
    );
    registry.restart();
    news(&server, "registry reachable again").await;
    assert_eq!(publish(&registry, &models.join("v1")).await, 6);
    promote(&registry, 6).await;
    let d = rollout_of(&server, "6").await;
    assert_eq!(d["rollout"]["state"], "promoted", "{d:#}");
    let during = load.since(t0);
    assert!(failures(&during).is_empty(), "{:?}", failures(&during));

    load.stop().await;
    let all = load_total(&server);
    println!("whole run: {all}");
    Arc::into_inner(server).unwrap().shutdown().await;

    // A restarted server finds the alias's version in its cache (verified
    // by the first one) and serves it.
    let again = common::start(&config(&registry.uri(), &tmp.path().join("cache"))).await;
    assert_eq!(tiny(&again.models().await)["versions"][0]["name"], "6");
    let r = again.post("/v2/models/tiny/infer", request(1)).await;
    assert!(r.status.is_success(), "{:?}", r.body);
    assert_eq!(r.json()["model_version"], "6");
    again.shutdown().await;
}

/// When the rollout's last event happened (Unix ms).
fn start_of_end(d: &Value) -> u64 {
    let start = d["rollout"]["started_unix_ms"].as_u64().unwrap();
    start + events(d).last().map_or(0, |e| e.0)
}

fn load_total(server: &Running) -> String {
    let d = &server.server.deployments[0];
    format!(
        "serving versions {:?}",
        d.versions()
            .iter()
            .map(|v| v.name.to_string())
            .collect::<Vec<_>>()
    )
}
