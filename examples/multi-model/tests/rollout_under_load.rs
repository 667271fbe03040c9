//! A rollout under load while each version autoscales, through the
//! server's own stack (`Server::start`, its axum router) in paused tokio
//! time: the split moves traffic from version 1 to version 2 in three
//! steps while 400 requests/s arrive, each version's `LatencySlo`
//! autoscaler adds replicas to carry its share, and every request gets
//! exactly one answer, a 200 from one of the two versions.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use example_multi_model::{Config, Server};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// A replica does at most 8 items per 20 + 8 × 4 = 52 ms (154 items/s),
/// so 400 requests/s need three; each starts 1 s after it is asked for.
/// The queue holds every burst while the autoscaler catches up (nothing
/// is refused), and the rollout steps 10 → 50 → 100 % every 10 s.
const CONFIG: &str = r#"
[server]
request_timeout = "10s"

[[deployment]]
name = "m"
model = "identity"
identity_delay = "20ms"
identity_item_delay = "4ms"
identity_start_delay = "1s"

[[deployment.version]]
name = "1"

[[deployment.version]]
name = "2"

[deployment.batching]
max_batch_size = 8
max_wait = "2ms"
queue_capacity = 8192
queue_timeout = "10s"
adaptive = false

[deployment.replicas]
min = 1
max = 8
policy = "latency_slo"
slo = "100ms"

[deployment.rollout]
steps = [10, 50, 100]
step = "10s"
min_samples = 50
max_p99_factor = 2.0

[deployment.device]
kind = "cpu"
"#;
/// Requests per second, and for how long.
const RATE: u64 = 400;
const SECS: u64 = 45;
const ROUTE: &str = "/v1/models/m/infer";

async fn call(app: &Router, request: Request<Body>) -> (StatusCode, Value) {
    let rsp = app.clone().oneshot(request).await.expect("infallible");
    let status = rsp.status();
    let body = rsp.into_body().collect().await.expect("body").to_bytes();
    let json = serde_json::from_slice(&body)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {body:?}"));
    (status, json)
}

async fn infer(app: &Router, x: f32) -> (StatusCode, Value) {
    let body = serde_json::json!({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 1], "data": [x]}]
    });
    let request = Request::post(ROUTE)
        .header("content-type", "application/json")
        .body(Body::from(body.to_string()))
        .expect("request");
    call(app, request).await
}

/// `/v1/models`' entry of the deployment.
async fn model(app: &Router) -> Value {
    let request = Request::get("/v1/models").body(Body::empty()).unwrap();
    let (status, models) = call(app, request).await;
    assert_eq!(status, StatusCode::OK);
    models["models"][0].clone()
}

fn figure(version: &Value, field: &str) -> u64 {
    version[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} in {version}"))
}

#[tokio::test(start_paused = true)]
async fn a_rollout_under_load_with_autoscaling_answers_every_request() {
    let server = Server::start(Config::parse(CONFIG).expect("the configuration"))
        .await
        .expect("the server starts");
    let app = server.router();
    // The first replicas start after their cold start.
    for _ in 0..100 {
        if server.ready() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(server.ready(), "no ready replica after 10 s");

    let answers = Arc::new(AtomicU64::new(0));
    let load = tokio::spawn({
        let (app, answers) = (app.clone(), Arc::clone(&answers));
        async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1) / RATE as u32);
            let mut calls = tokio::task::JoinSet::new();
            for i in 0..RATE * SECS {
                tick.tick().await;
                let (app, answers) = (app.clone(), Arc::clone(&answers));
                calls.spawn(async move {
                    let (status, answer) = infer(&app, i as f32).await;
                    assert_eq!(status, StatusCode::OK, "{answer}");
                    assert_eq!(answer["outputs"][0]["data"][0], i as f64, "{answer}");
                    let version = answer["model_version"].as_str().unwrap_or_default();
                    assert!(version == "1" || version == "2", "{answer}");
                    answers.fetch_add(1, Ordering::Relaxed);
                });
            }
            while let Some(call) = calls.join_next().await {
                call.expect("every call answered 200 by a version");
            }
        }
    });
    // The rollout ends (bounded: 2 minutes of the test's clock).
    let mut during = Value::Null;
    for _ in 0..1200 {
        during = model(&app).await;
        let state = during["rollout"]["state"].as_str().unwrap_or_default();
        if state != "progressing" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(during["rollout"]["state"], "promoted", "{during:#}");
    load.await.expect("the load ran");
    assert_eq!(answers.load(Ordering::Relaxed), RATE * SECS);

    let after = model(&app).await;
    eprintln!("at the promotion: {during:#}\nafter: {after:#}");
    let versions = after["versions"].as_array().expect("versions");
    let (v1, v2) = (&versions[0], &versions[1]);
    assert_eq!(
        (v1["weight"].as_f64(), v2["weight"].as_f64()),
        (Some(0.0), Some(100.0))
    );
    assert_eq!(figure(v1, "errors") + figure(v2, "errors"), 0);
    assert_eq!(figure(v1, "requests") + figure(v2, "requests"), RATE * SECS);
    // Both versions had work, version 2 ended with all of it, and each
    // scaled past the one replica it started with to carry its share.
    assert!(
        figure(v2, "requests") > figure(v1, "requests") / 4,
        "{after:#}"
    );
    for v in during["versions"].as_array().expect("versions") {
        assert!(figure(v, "ready_replicas") >= 3, "{during:#}");
    }
    assert_eq!((figure(v1, "in_flight"), figure(v2, "in_flight")), (0, 0));
    for d in &server.deployments {
        d.shutdown();
    }
}
