//! A real Prometheus (Debian's package, started by `scripts/prometheus.sh`
//! with `observability/prometheus.yml` and the alert rules) scrapes the
//! server every second under load; then every query of the Grafana
//! dashboard and of the rules runs against Prometheus's HTTP API and must
//! return data, and `scripts/render_dashboard.py` draws every panel of the
//! dashboard from that Prometheus with data in each.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use bytes::Bytes;
use common::{fp32_row, start, Running, TEST_CONFIG};
use futures::future::join_all;
use hyper::StatusCode;
use tokio::time::Instant;

/// Metrics the dashboard and the rules use that the server does not emit
/// yet. A query naming one is still sent (Prometheus must accept it) but
/// may come back empty while the metric is missing from `/metrics`; once
/// the server emits it, its queries must return data like the others.
///
/// - `convoy_autoscale_max_replicas{deployment}`: no crate exports the
///   configured maximum yet.
/// - `convoy_gpu_pool_bytes_*{tenant}` and `convoy_router_weight{split,backend}`:
///   the pool and the split register their handles when built, and the
///   server builds them before it installs its Prometheus recorder.
/// - `convoy_drift_detected{model}`: only a deployment with a
///   `[deployment.drift]` section emits it, after its first window
///   (tests/drift.rs checks it on `/metrics`).
const NOT_EMITTED_YET: &[&str] = &["convoy_drift_detected"];

/// How long the load runs.
const LOAD: Duration = Duration::from_secs(15);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A Prometheus started by `scripts/prometheus.sh`, stopped on drop.
struct Prometheus {
    url: String,
    dir: String,
}

impl Prometheus {
    fn start(target: &str) -> Self {
        let script = repo_root().join("scripts/prometheus.sh");
        let out = Command::new("bash")
            .arg(&script)
            .args(["start", target, "1s"])
            .output()
            .expect("run scripts/prometheus.sh");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "prometheus.sh start failed: {stdout}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let value = |key: &str| {
            stdout
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap_or_else(|| panic!("no {key} in {stdout}"))
                .to_string()
        };
        Self {
            url: value("PROMETHEUS_URL="),
            dir: value("PROMETHEUS_DIR="),
        }
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(repo_root().join("scripts/prometheus.sh"))
            .args(["stop", &self.dir])
            .status();
    }
}

/// Percent-encodes a query-string value.
fn encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `GET url` with the server's HTTP client, as JSON.
async fn get_json(s: &Running, url: &str) -> serde_json::Value {
    let req = hyper::Request::get(url)
        .body(http_body_util::Full::new(Bytes::new()))
        .unwrap();
    let rsp = s.client.request(req).await.expect("Prometheus answers");
    let status = rsp.status();
    let body = http_body_util::BodyExt::collect(rsp.into_body())
        .await
        .expect("body")
        .to_bytes();
    let json: serde_json::Value =
        serde_json::from_slice(&body).unwrap_or_else(|e| panic!("{url}: not JSON ({e}): {body:?}"));
    assert_eq!(status, StatusCode::OK, "{url}: {json}");
    json
}

/// Every `expr` in the dashboard JSON.
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                if let Some(serde_json::Value::String(e)) = m.get("expr") {
                    out.push(e.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let path = repo_root().join("observability/grafana/dashboard.json");
    let text = std::fs::read_to_string(&path).expect("dashboard.json");
    let json: serde_json::Value = serde_json::from_str(&text).expect("dashboard is JSON");
    let mut out = Vec::new();
    walk(&json, &mut out);
    out
}

/// The queries behind an alert: each side of its top-level comparison
/// (`a > 0.5` → `a`; `a >= on (x) b` → `a`, `b`; `a / (b >= 1) < 0.5` →
/// `a / (b >= 1)`), as a comparison that does not hold returns nothing by
/// design. Comparisons inside parentheses stay in their operand.
fn alert_operands(expr: &str) -> Vec<String> {
    let expr = expr.trim();
    let mut depth = 0i32;
    let mut found = None;
    for (i, c) in expr.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            _ if depth == 0 => {
                if let Some(op) = [" >= ", " <= ", " > ", " < "]
                    .iter()
                    .find(|op| expr[i..].starts_with(**op))
                {
                    found = Some((i, *op));
                    break;
                }
            }
            _ => {}
        }
    }
    let Some((at, op)) = found else {
        return vec![expr.to_string()];
    };
    let lhs = expr[..at].trim().to_string();
    let mut rhs = expr[at + op.len()..].trim();
    if let Some(rest) = rhs.strip_prefix("on (") {
        rhs = rest.split_once(')').map_or(rest, |(_, r)| r).trim();
    }
    let mut out = vec![lhs];
    if rhs.parse::<f64>().is_err() {
        out.push(rhs.to_string());
    }
    out
}

/// A query as it can return data in a run of seconds: an `offset 1h`
/// (the request-rate-drop alert's hour-earlier rate) reads the present
/// instead, so the query's series and arithmetic are still checked.
fn without_offsets(query: &str) -> String {
    query.replace(" offset 1h", "")
}

/// Drives the server for [`LOAD`]: steady identity traffic (both versions
/// of the split) and bursts at the one-slot `slow` deployment, whose
/// four-item queue refuses the excess (errors and queue-full rejections).
async fn drive(s: &Running) -> (usize, usize) {
    let until = Instant::now() + LOAD;
    let steady = join_all((0..4).map(|w| async move {
        let mut ok = 0;
        while Instant::now() < until {
            let r = s
                .post("/v1/models/identity/infer", fp32_row(&[w as f32]))
                .await;
            assert_eq!(r.status, StatusCode::OK);
            ok += 1;
        }
        ok
    }));
    let bursts = async {
        let mut refused = 0;
        while Instant::now() < until {
            let replies =
                join_all((0..10).map(|i| s.post("/v1/models/slow/infer", fp32_row(&[i as f32]))))
                    .await;
            refused += replies
                .iter()
                .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
                .count();
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        refused
    };
    let (steady, refused) = tokio::join!(steady, bursts);
    (steady.iter().sum(), refused)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_dashboard_and_rule_query_returns_data_from_a_real_prometheus() {
    let s = start(TEST_CONFIG).await;
    let prom = Prometheus::start(&s.addr.to_string());

    // Prometheus sees the server as a healthy target before the load.
    let targets = format!("{}/api/v1/targets", prom.url);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let t = get_json(&s, &targets).await;
        if t["data"]["activeTargets"][0]["health"] == "up" {
            break;
        }
        assert!(Instant::now() < deadline, "target never up: {t}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    let window_start = unix_now() - 2.0;
    let (answered, refused) = drive(&s).await;
    assert!(
        answered > 0 && refused > 0,
        "{answered} answered, {refused} refused"
    );

    // The queue-full alert (no `for`) fires on the rejections just made.
    let alerts = format!("{}/api/v1/alerts", prom.url);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let a = get_json(&s, &alerts).await;
        let firing = a["data"]["alerts"].as_array().is_some_and(|a| {
            a.iter().any(|a| {
                a["labels"]["alertname"] == "ConvoyQueueFullRejections" && a["state"] == "firing"
            })
        });
        if firing {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "queue-full alert not firing: {a}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }

    // Every rule loaded and evaluates without error.
    let rules = get_json(&s, &format!("{}/api/v1/rules", prom.url)).await;
    let mut queries: Vec<(String, String)> = Vec::new();
    for group in rules["data"]["groups"].as_array().expect("rule groups") {
        for rule in group["rules"].as_array().expect("rules") {
            let name = rule["name"].as_str().unwrap().to_string();
            assert_eq!(rule["health"], "ok", "rule {name}: {rule}");
            let query = rule["query"].as_str().unwrap();
            if rule["type"] == "alerting" {
                for q in alert_operands(query) {
                    queries.push((format!("alert {name}"), q));
                }
            } else {
                queries.push((format!("rule {name}"), query.to_string()));
                // The recorded series itself, as the dashboard reads it.
                queries.push((format!("recorded {name}"), name));
            }
        }
    }
    assert_eq!(
        queries
            .iter()
            .filter(|(w, _)| w.starts_with("alert "))
            .count(),
        7,
        "six alerts, one of them comparing two queries: {queries:?}"
    );
    let dashboard = dashboard_queries();
    assert!(dashboard.len() >= 8, "{dashboard:?}");
    queries.extend(dashboard.into_iter().map(|q| ("dashboard".to_string(), q)));

    let exposed = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    let mut empty = Vec::new();
    let mut skipped = Vec::new();
    for (what, query) in &queries {
        let url = format!(
            "{}/api/v1/query?query={}",
            prom.url,
            encode(&without_offsets(query))
        );
        let pending = NOT_EMITTED_YET
            .iter()
            .find(|m| query.contains(**m) && !exposed.contains(**m));
        // Rates need two scrapes and recorded series one evaluation after
        // them: retry for a while before calling a query empty.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let r = get_json(&s, &url).await;
            assert_eq!(r["status"], "success", "{what}: {query}: {r}");
            if r["data"]["result"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
            {
                break;
            }
            if let Some(metric) = pending {
                skipped.push(format!("{what}: {query} (no {metric} yet)"));
                break;
            }
            if Instant::now() >= deadline {
                empty.push(format!("{what}: {query}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    for q in &skipped {
        eprintln!("not checked for data: {q}");
    }
    assert!(
        empty.is_empty(),
        "{} of {} queries returned no data:\n{}",
        empty.len(),
        queries.len(),
        empty.join("\n")
    );

    render_dashboard_without_no_data_panels(&prom.url, window_start).await;

    drop(prom);
    s.shutdown().await;
}

/// Seconds since the Unix epoch (Prometheus's time).
fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs_f64()
}

/// `scripts/render_dashboard.py` draws every panel over the test's window
/// from the same Prometheus: it exits 0, writes a PNG of dashboard size
/// and finds data for every panel.
async fn render_dashboard_without_no_data_panels(prometheus: &str, start: f64) {
    let python = repo_root().join(".venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        python.display()
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let png = dir.path().join("dashboard.png");
    let began = Instant::now();
    let out = tokio::process::Command::new(&python)
        .arg(repo_root().join("scripts/render_dashboard.py"))
        .args(["--prometheus", prometheus, "--scrape-interval", "1s"])
        .args(["--start", &format!("{start:.3}"), "--end"])
        .arg(format!("{:.3}", unix_now()))
        .arg("--out")
        .arg(&png)
        .output()
        .await
        .expect("run scripts/render_dashboard.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let text = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "render_dashboard.py failed: {text}");
    eprintln!(
        "render_dashboard.py took {:.1?}: {}",
        began.elapsed(),
        stdout.lines().last().unwrap_or("")
    );
    let no_data: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("no data: "))
        .collect();
    assert!(
        no_data.is_empty(),
        "panels with no data: {no_data:?}\n{text}"
    );
    let panels = dashboard_panel_count();
    assert!(
        stdout.contains(&format!("panels: {panels} drawn, 0 with no data")),
        "{text}"
    );

    let bytes = std::fs::read(&png).expect("the PNG was written");
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    assert_eq!(&bytes[12..16], b"IHDR", "no PNG header chunk");
    let width = u32::from_be_bytes(bytes[16..20].try_into().unwrap());
    let height = u32::from_be_bytes(bytes[20..24].try_into().unwrap());
    // The dashboard's 24-column grid at the renderer's scale; a picture
    // of eight drawn panels is not a few bytes.
    assert!(
        (1000..=4000).contains(&width) && (600..=4000).contains(&height),
        "{width}x{height}"
    );
    assert!(
        (20_000..5_000_000).contains(&bytes.len()),
        "{} bytes",
        bytes.len()
    );
}

/// How many panels the dashboard has.
fn dashboard_panel_count() -> usize {
    let path = repo_root().join("observability/grafana/dashboard.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).expect("dashboard.json"))
            .expect("dashboard is JSON");
    json["panels"].as_array().expect("panels").len()
}

#[test]
fn alert_operands_split_the_top_level_comparison() {
    assert_eq!(alert_operands("a:b > 0.5"), ["a:b"]);
    assert_eq!(
        alert_operands("max by (d) (x) >= on (d) max by (d) (y)"),
        ["max by (d) (x)", "max by (d) (y)"]
    );
    assert_eq!(alert_operands("up"), ["up"]);
    assert_eq!(
        alert_operands("a:b / (a:b offset 1h >= 1) < 0.5"),
        ["a:b / (a:b offset 1h >= 1)"]
    );
    assert_eq!(
        without_offsets("a:b / (a:b offset 1h >= 1)"),
        "a:b / (a:b >= 1)"
    );
}

#[test]
fn encode_escapes_promql() {
    assert_eq!(
        encode("rate(x{a=\"b\"}[1m]) > 0"),
        "rate%28x%7Ba%3D%22b%22%7D%5B1m%5D%29%20%3E%200"
    );
}

/// `promtool check config`, `check rules`, `test rules` (each alert firing
/// and not firing) and the syntax of every dashboard query.
#[test]
fn promtool_checks_the_rules_and_their_unit_tests_pass() {
    let out = Command::new("bash")
        .arg(repo_root().join("scripts/prometheus.sh"))
        .arg("check")
        .output()
        .expect("run scripts/prometheus.sh check");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("Unit Testing"), "{text}");
    assert!(text.contains("dashboard_rules.yml"), "{text}");
}
