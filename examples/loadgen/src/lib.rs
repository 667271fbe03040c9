//! A closed-loop HTTP load generator for the convoy examples.
//!
//! `concurrency` clients each send one request, wait for its answer, and send
//! the next, until the run's duration is over or its request budget is spent;
//! the run always stops by itself. It reports items per second, latency
//! percentiles (hdrhistogram, microseconds) and errors by kind.
//!
//! It only talks to loopback addresses: it is a tool for measuring the
//! examples on this machine, not for loading someone else's server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use loadgen::{LoadConfig, run};
//!
//! let config = LoadConfig::new("http://127.0.0.1:3000/v1/models/mlp/infer".parse()?)
//!     .concurrency(16)
//!     .duration(Duration::from_secs(5))
//!     .json_body(r#"{"inputs":[0.0]}"#);
//! let report = run(&config).await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, Uri};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde::Serialize;
use tokio::time::Instant;

pub mod demo;

/// Largest latency the histograms record (60 s, in µs); longer ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Most bytes of a response body that are read; the rest is an error.
const MAX_BODY_BYTES: usize = 1 << 20;

/// One load run: where, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    uri: Uri,
    method: Method,
    body: Bytes,
    concurrency: usize,
    duration: Duration,
    max_requests: Option<u64>,
    request_timeout: Duration,
}

impl LoadConfig {
    /// A `GET` run against `uri` with 1 client for 5 s, no request cap, and a
    /// 30 s timeout per request.
    pub fn new(uri: Uri) -> Self {
        Self {
            uri,
            method: Method::GET,
            body: Bytes::new(),
            concurrency: 1,
            duration: Duration::from_secs(5),
            max_requests: None,
            request_timeout: Duration::from_secs(30),
        }
    }

    /// Sends `body` as a JSON `POST` on every request.
    pub fn json_body(mut self, body: impl Into<Bytes>) -> Self {
        self.method = Method::POST;
        self.body = body.into();
        self
    }

    /// Number of closed-loop clients (at least 1).
    pub fn concurrency(mut self, clients: usize) -> Self {
        self.concurrency = clients.max(1);
        self
    }

    /// How long clients keep sending new requests.
    pub fn duration(mut self, duration: Duration) -> Self {
        self.duration = duration;
        self
    }

    /// The most requests the run sends in all (it may stop earlier, on time).
    pub fn max_requests(mut self, max: u64) -> Self {
        self.max_requests = Some(max);
        self
    }

    /// How long one request may take before it counts as a `timeout` error.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// The target URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    message: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

/// Checks that `uri` is plain `http` to a loopback address (`127.0.0.0/8`,
/// `::1` or `localhost`).
pub fn ensure_loopback(uri: &Uri) -> Result<(), LoadError> {
    let err = |why: &str| {
        Err(LoadError {
            message: format!("{uri}: {why}"),
        })
    };
    if uri.scheme_str() != Some("http") {
        return err("only http:// URIs are supported");
    }
    let Some(host) = uri.host() else {
        return err("the URI has no host");
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return Ok(());
    }
    match host.parse::<IpAddr>() {
        Ok(ip) if ip.is_loopback() => Ok(()),
        _ => err("loadgen only targets loopback addresses (127.0.0.1, ::1, localhost)"),
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Failed requests by kind: `"http 503"`, `"timeout"`, `"connect"`, ...
    pub errors: BTreeMap<String, u64>,
    /// Wall time from the first request to the last answer.
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds.
    pub latency_us: Histogram<u64>,
    /// Number of clients.
    pub concurrency: usize,
}

/// The figures of a [`LoadReport`], flat, for JSON output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// Number of clients.
    pub concurrency: usize,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Run time in seconds.
    pub elapsed_s: f64,
    /// Successful items per second.
    pub items_per_s: f64,
    /// Latency percentiles of successful requests, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile latency, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
}

impl LoadReport {
    fn empty(concurrency: usize) -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            concurrency,
        }
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second of wall time.
    pub fn items_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1) of successful requests, in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// The report's figures, flat.
    pub fn summary(&self) -> Summary {
        Summary {
            concurrency: self.concurrency,
            ok: self.ok,
            errors: self.error_count(),
            errors_by_kind: self.errors.clone(),
            elapsed_s: self.elapsed.as_secs_f64(),
            items_per_s: self.items_per_sec(),
            p50_ms: self.latency_ms(0.50),
            p90_ms: self.latency_ms(0.90),
            p99_ms: self.latency_ms(0.99),
            max_ms: if self.latency_us.is_empty() {
                0.0
            } else {
                self.latency_us.max() as f64 / 1000.0
            },
        }
    }

    fn merge(&mut self, other: ClientTally) {
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "clients {:>4}  ok {:>7}  errors {:>5}  {:>9.1} items/s  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms",
            self.concurrency, self.ok, self.errors, self.items_per_s, self.p50_ms, self.p90_ms, self.p99_ms
        )?;
        for (kind, n) in &self.errors_by_kind {
            write!(f, "  [{kind}: {n}]")?;
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// A JSON body `{"inputs":[...]}` with `width` numbers drawn from a RNG
/// seeded with `seed`, in `[-1, 1)`.
pub fn random_inputs_body(width: usize, seed: u64) -> Bytes {
    let mut rng = StdRng::seed_from_u64(seed);
    let inputs: Vec<f32> = (0..width).map(|_| rng.random_range(-1.0..1.0)).collect();
    Bytes::from(serde_json::to_vec(&serde_json::json!({ "inputs": inputs })).expect("numbers"))
}

/// The HTTP client the runs use (HTTP/1.1, keep-alive, no TLS).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// A client with room for `connections` idle keep-alive connections.
pub fn http_client(connections: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(connections)
        .build(connector)
}

/// Sends a `GET` to a loopback `uri` and returns the body if the status is 2xx.
pub async fn get_body(client: &HttpClient, uri: &Uri) -> Result<Bytes, LoadError> {
    ensure_loopback(uri)?;
    let req = Request::get(uri.clone())
        .body(Full::new(Bytes::new()))
        .map_err(|e| LoadError {
            message: e.to_string(),
        })?;
    match send(client, req, Duration::from_secs(10)).await {
        Ok(body) => Ok(body),
        Err(kind) => Err(LoadError {
            message: format!("GET {uri}: {kind}"),
        }),
    }
}

/// Runs the closed loop described by `config` and reports what it measured.
pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    run_with(&http_client(config.concurrency), config).await
}

/// Like [`run`], on a given client (so runs can share warm connections).
pub async fn run_with(client: &HttpClient, config: &LoadConfig) -> Result<LoadReport, LoadError> {
    ensure_loopback(&config.uri)?;
    let budget = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let stop_at = start + config.duration;
    let mut clients = tokio::task::JoinSet::new();
    for _ in 0..config.concurrency {
        let client = client.clone();
        let config = config.clone();
        let budget = Arc::clone(&budget);
        clients.spawn(async move { client_loop(client, config, budget, stop_at).await });
    }
    let mut report = LoadReport::empty(config.concurrency);
    while let Some(tally) = clients.join_next().await {
        match tally {
            Ok(tally) => report.merge(tally),
            Err(e) => {
                return Err(LoadError {
                    message: format!("a client task failed: {e}"),
                })
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

struct ClientTally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

async fn client_loop(
    client: HttpClient,
    config: LoadConfig,
    budget: Arc<AtomicU64>,
    stop_at: Instant,
) -> ClientTally {
    let mut tally = ClientTally {
        ok: 0,
        errors: BTreeMap::new(),
        latency_us: new_histogram(),
    };
    loop {
        if Instant::now() >= stop_at {
            break;
        }
        if let Some(max) = config.max_requests {
            if budget.fetch_add(1, Ordering::Relaxed) >= max {
                break;
            }
        }
        let mut builder = Request::builder()
            .method(config.method.clone())
            .uri(config.uri.clone());
        if !config.body.is_empty() {
            builder = builder.header(hyper::header::CONTENT_TYPE, "application/json");
        }
        let req = builder
            .body(Full::new(config.body.clone()))
            .expect("method and URI were validated");
        let sent = Instant::now();
        match send(&client, req, config.request_timeout).await {
            Ok(_) => {
                tally.ok += 1;
                let us = u64::try_from(sent.elapsed().as_micros()).unwrap_or(u64::MAX);
                tally
                    .latency_us
                    .saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(kind) => *tally.errors.entry(kind).or_default() += 1,
        }
    }
    tally
}

/// One request; `Err` holds the error kind used as a report key.
async fn send(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Bytes, String> {
    let exchange = async {
        let resp = client.request(req).await.map_err(|e| {
            if e.is_connect() {
                "connect".to_owned()
            } else {
                "transport".to_owned()
            }
        })?;
        let status = resp.status();
        let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY_BYTES)
            .collect()
            .await
            .map_err(|_| "body".to_owned())?
            .to_bytes();
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("http {}", status.as_u16()))
        }
    };
    match tokio::time::timeout(timeout, exchange).await {
        Ok(result) => result,
        Err(_) => Err("timeout".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only() {
        for ok in [
            "http://127.0.0.1:3000/x",
            "http://127.8.0.1/",
            "http://[::1]:80/",
            "http://localhost:1/",
        ] {
            assert_eq!(ensure_loopback(&ok.parse().unwrap()), Ok(()), "{ok}");
        }
        for bad in [
            "http://10.0.0.1/",
            "http://example.com/",
            "https://127.0.0.1/",
            "http://0.0.0.0:3000/",
            "/relative",
        ] {
            assert!(ensure_loopback(&bad.parse().unwrap()).is_err(), "{bad}");
        }
    }

    #[test]
    fn summary_figures() {
        let mut report = LoadReport::empty(4);
        let mut tally = ClientTally {
            ok: 100,
            errors: BTreeMap::from([("http 503".to_owned(), 3)]),
            latency_us: new_histogram(),
        };
        for us in 1..=100 {
            tally.latency_us.record(us * 1000).unwrap();
        }
        report.merge(tally);
        report.elapsed = Duration::from_secs(2);
        let s = report.summary();
        assert_eq!(s.ok, 100);
        assert_eq!(s.errors, 3);
        assert!((s.items_per_s - 50.0).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!(s.to_string().contains("http 503: 3"));
    }

    #[test]
    fn body_is_seeded_json() {
        let a = random_inputs_body(16, 1);
        assert_eq!(a, random_inputs_body(16, 1));
        assert_ne!(a, random_inputs_body(16, 2));
        let v: serde_json::Value = serde_json::from_slice(&a).unwrap();
        assert_eq!(v["inputs"].as_array().unwrap().len(), 16);
    }

    #[tokio::test]
    async fn refuses_non_loopback_before_sending() {
        let cfg = LoadConfig::new("http://192.0.2.1:80/".parse().unwrap());
        assert!(run(&cfg).await.is_err());
    }
}
