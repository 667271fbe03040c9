//! Production drift monitoring end to end (`[deployment.drift]`): an
//! identity deployment fed in-distribution then shifted inputs flips
//! `/v1/models/{name}/drift`, its HTML page and the `convoy_drift_*` gauges
//! on `/metrics`; bad drift configuration fails at load naming the field.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{fp32_row, start};
use example_multi_model::{Config, Server};
use hyper::StatusCode;
use tokio::time::Instant;

/// The identity monitor's columns: the mean of the input row and of the
/// output row, values around 0.5 in the reference.
fn write_reference(dir: &Path) -> std::path::PathBuf {
    let values: Vec<f64> = (0..400)
        .map(|i| 0.25 + f64::from(i % 100) / 200.0)
        .collect();
    let reference = serde_json::json!({"columns": [
        {"name": "input_mean", "kind": "numerical", "values": values},
        {"name": "output_mean", "kind": "numerical", "values": values},
    ]});
    let path = dir.join("identity_reference.json");
    std::fs::write(&path, reference.to_string()).unwrap();
    path
}

fn config(reference: &Path, drift_extra: &str) -> String {
    format!(
        r#"
[server]
request_timeout = "10s"
blocking_tasks = 2
host_memory = 268435456

[[deployment]]
name = "watched"
model = "identity"

[deployment.batching]
max_batch_size = 8
max_wait = "1ms"

[deployment.device]
kind = "cpu"

[deployment.replicas]
min = 1
max = 1

[deployment.drift]
window = "1s"
sample_size = 200
min_samples = 20
reference = "{}"
{drift_extra}
"#,
        reference.display()
    )
}

/// Sends `n` requests whose row means are spread over [0.25, 0.75) + `shift`.
async fn send(s: &common::Running, n: usize, shift: f32) {
    for i in 0..n {
        let v = 0.25 + (i % 100) as f32 / 200.0 + shift;
        let r = s
            .post("/v1/models/watched/infer", fp32_row(&[v, v, v]))
            .await;
        assert_eq!(r.status, StatusCode::OK);
    }
}

/// Waits (bounded) for a report of a window after `after` whose verdict is
/// `drift`; returns it.
async fn report_after(s: &common::Running, after: Option<u64>, drift: bool) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = s.get("/v1/models/watched/drift").await;
        if r.status == StatusCode::OK {
            let j = r.json();
            let index = j["window"]["index"].as_u64().unwrap();
            if after.is_none_or(|a| index > a) && j["tested"] == true && j["dataset_drift"] == drift
            {
                return j;
            }
        } else {
            assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{:?}", r.body);
        }
        assert!(
            Instant::now() < deadline,
            "no report with dataset_drift = {drift}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn gauge(metrics: &str, name: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(name) && l.contains("model=\"watched\""))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shifted_inputs_flip_the_report_and_the_gauges() {
    let dir = tempfile::tempdir().unwrap();
    let s = start(&config(&write_reference(dir.path()), "")).await;

    // Before any window closes: 503 with Retry-After.
    let r = s.get("/v1/models/watched/drift").await;
    if r.status == StatusCode::SERVICE_UNAVAILABLE {
        assert!(r.headers.contains_key("retry-after"));
    }

    // In distribution: no drift.
    let steady = async {
        loop {
            send(&s, 100, 0.0).await;
        }
    };
    let ok = tokio::select! {
        j = report_after(&s, None, false) => j,
        _ = steady => unreachable!(),
    };
    let cols = ok["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 2, "{ok}");
    assert_eq!(cols[0]["column"], "input_mean");
    assert_eq!(cols[0]["stattest"], "ks", "{ok}");
    let last = ok["window"]["index"].as_u64();
    let metrics = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    assert_eq!(
        gauge(&metrics, "convoy_drift_detected"),
        Some(0.0),
        "{metrics}"
    );

    // Shifted: every column drifts.
    let shifted = async {
        loop {
            send(&s, 100, 2.0).await;
        }
    };
    let drifted = tokio::select! {
        j = report_after(&s, last, true) => j,
        _ = shifted => unreachable!(),
    };
    assert_eq!(drifted["share"], 1.0, "{drifted}");
    assert!(drifted["columns"]
        .as_array()
        .unwrap()
        .iter()
        .all(|c| c["drifted"] == true));
    let metrics = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    assert_eq!(
        gauge(&metrics, "convoy_drift_detected"),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        gauge(&metrics, "convoy_drift_share"),
        Some(1.0),
        "{metrics}"
    );

    let html = s.get("/v1/models/watched/drift.html").await;
    assert_eq!(html.status, StatusCode::OK);
    assert_eq!(html.headers["content-type"], "text/html; charset=utf-8");
    let page = String::from_utf8_lossy(&html.body);
    assert!(
        page.contains("DATASET DRIFT DETECTED") && page.contains("input_mean"),
        "{page}"
    );

    // No monitor: 404 naming the section.
    let r = s.get("/v1/models/nope/drift").await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

/// What starting `config` fails with.
async fn start_error(config: &str) -> String {
    match Config::parse(config) {
        Err(e) => e.to_string(),
        Ok(c) => match Server::start(c).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("the server started with a bad drift section"),
        },
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_drift_configuration_fails_at_load_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write_reference(dir.path());
    let good = config(&reference, "");

    let e = start_error(&good.replace(r#"window = "1s""#, r#"window = "0s""#)).await;
    assert!(e.contains("deployment.drift.window"), "{e}");
    let e = start_error(&config(&reference, r#"stattest = "kolmogorov""#)).await;
    assert!(
        e.contains("deployment.drift.stattest") && e.contains("kolmogorov"),
        "{e}"
    );
    let e = start_error(&config(&dir.path().join("missing.json"), "")).await;
    assert!(
        e.contains("deployment.drift.reference") && e.contains("missing.json"),
        "{e}"
    );
    let e = start_error(&config(&reference, "windw = 3")).await;
    assert!(e.contains("windw") && e.contains("line"), "{e}");
    // A reference whose columns are not the identity monitor's.
    let other = dir.path().join("other.json");
    std::fs::write(
        &other,
        r#"{"columns":[{"name":"tokens","kind":"numerical","values":[1,2,3]}]}"#,
    )
    .unwrap();
    let e = start_error(&config(&other, "")).await;
    assert!(
        e.contains("deployment.drift.reference") && e.contains("input_mean"),
        "{e}"
    );
}

/// A registry deployment's reference comes with its downloaded version: the
/// server fills `drift.reference` from the manifest in the version's folder
/// (`drift_reference`, relative to it) when the section leaves it out, and
/// keeps one the section names.
#[test]
fn the_reference_comes_from_the_versions_manifest() {
    let dir = tempfile::tempdir().unwrap();
    let reference = write_reference(dir.path());
    let text =
        config(&reference, "").replace(&format!("reference = \"{}\"\n", reference.display()), "");
    let config = example_multi_model::Config::parse(&text).unwrap();
    let mut d = config.deployments().next().unwrap().clone();
    let section = |d: &example_multi_model::config::DeploymentConfig| {
        d.drift.as_ref().unwrap().config.reference.clone()
    };
    assert_eq!(section(&d), None, "the section names no reference");
    // A folder without a manifest leaves it out.
    let empty = tempfile::tempdir().unwrap();
    example_multi_model::drift::reference_from(&mut d, empty.path());
    assert_eq!(section(&d), None);
    std::fs::write(
        dir.path().join("model.json"),
        r#"{"drift_reference": "identity_reference.json"}"#,
    )
    .unwrap();
    example_multi_model::drift::reference_from(&mut d, dir.path());
    assert_eq!(section(&d), Some(reference.clone()));
    // One the section names is kept.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::write(
        elsewhere.path().join("model.json"),
        r#"{"drift_reference": "other.json"}"#,
    )
    .unwrap();
    example_multi_model::drift::reference_from(&mut d, elsewhere.path());
    assert_eq!(section(&d), Some(reference));
}
