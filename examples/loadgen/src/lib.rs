//! A load generator for the convoy examples: closed loop or open loop,
//! over HTTP (any route, bodies from files), KServe v2 REST (JSON or binary
//! tensors) and KServe v2 gRPC.
//!
//! - **Closed loop** ([`Mode::Closed`]): `concurrency` clients each send one
//!   request, wait for its answer, and send the next. It finds the
//!   throughput at saturation, but a slow server slows the clients down,
//!   so queueing never shows in full (coordinated omission).
//! - **Open loop** ([`Mode::Open`]): requests arrive on a seeded Poisson
//!   schedule ([`schedule::PoissonSchedule`]) at a target rate whatever the
//!   server does, and each latency is measured from the request's
//!   *intended* send time, so a stall shows in every request scheduled
//!   during it. At most `max_outstanding` requests are in flight; an
//!   arrival beyond that is not sent and counts as a `dropped` error.
//!
//! Runs stop by themselves (duration or request budget) and report items
//! per second, latency percentiles (hdrhistogram, microseconds) and errors
//! by kind; [`sweep`] runs an open loop at several rates and [`plot`] draws
//! throughput and p50/p99 against offered load.
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
//!     .open_loop(200.0)
//!     .duration(Duration::from_secs(5))
//!     .json_body(r#"{"inputs":[0.0]}"#);
//! let report = run(&config).await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
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
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::payload::{Payload, Payloads};
use crate::schedule::PoissonSchedule;

pub mod demo;
pub mod grpc;
pub mod payload;
pub mod plot;
mod progress;
pub mod schedule;
pub mod sweep;
pub mod v2;

/// Largest latency the histograms record (60 s, in µs); longer ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// Most bytes of a response body that are read; the rest is an error.
const MAX_BODY_BYTES: usize = 16 << 20;
/// The error kind of an open-loop arrival refused because
/// `max_outstanding` requests were already in flight.
pub const DROPPED: &str = "dropped";

/// How requests are issued.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Mode {
    /// `concurrency` clients, each waiting for its answer before sending
    /// again; latency from the actual send.
    Closed {
        /// Number of clients (at least 1).
        concurrency: usize,
    },
    /// Poisson arrivals at `rate` per second from `seed`; latency from the
    /// intended send time; arrivals beyond `max_outstanding` in flight are
    /// dropped (counted as [`DROPPED`] errors).
    Open {
        /// Mean arrivals per second.
        rate: f64,
        /// Most requests in flight (at least 1).
        max_outstanding: usize,
        /// Seed of the arrival schedule.
        seed: u64,
    },
}

/// One load run: where, what, how hard, for how long.
#[derive(Debug, Clone)]
pub struct LoadConfig {
    uri: Uri,
    method: Method,
    payloads: Payloads,
    mode: Mode,
    duration: Duration,
    max_requests: Option<u64>,
    request_timeout: Duration,
    progress: bool,
}

impl LoadConfig {
    /// A `GET` run against `uri` with 1 closed-loop client for 5 s, no
    /// request cap, a 30 s timeout per request and no progress bar.
    pub fn new(uri: Uri) -> Self {
        Self {
            uri,
            method: Method::GET,
            payloads: Payloads::none(),
            mode: Mode::Closed { concurrency: 1 },
            duration: Duration::from_secs(5),
            max_requests: None,
            request_timeout: Duration::from_secs(30),
            progress: false,
        }
    }

    /// Sends `body` as a JSON `POST` on every request.
    pub fn json_body(self, body: impl Into<Bytes>) -> Self {
        self.payloads(Payloads::single(Payload::json(body)))
    }

    /// `POST`s these bodies in turn.
    pub fn payloads(mut self, payloads: Payloads) -> Self {
        self.method = Method::POST;
        self.payloads = payloads;
        self
    }

    /// Closed loop with this many clients (at least 1).
    pub fn concurrency(mut self, clients: usize) -> Self {
        self.mode = Mode::Closed {
            concurrency: clients.max(1),
        };
        self
    }

    /// Open loop: Poisson arrivals at `rate` per second, at most 1024 in
    /// flight, seed 1 (see [`Self::max_outstanding`], [`Self::seed`]).
    pub fn open_loop(mut self, rate: f64) -> Self {
        self.mode = Mode::Open {
            rate,
            max_outstanding: 1024,
            seed: 1,
        };
        self
    }

    /// Most requests in flight in an open loop (at least 1); no effect on
    /// a closed loop.
    pub fn max_outstanding(mut self, max: usize) -> Self {
        if let Mode::Open {
            max_outstanding, ..
        } = &mut self.mode
        {
            *max_outstanding = max.max(1);
        }
        self
    }

    /// Seed of an open loop's arrival schedule; no effect on a closed loop.
    pub fn seed(mut self, value: u64) -> Self {
        if let Mode::Open { seed, .. } = &mut self.mode {
            *seed = value;
        }
        self
    }

    /// How long new requests are sent.
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

    /// Draws a progress bar on stderr while running (when it is a terminal).
    pub fn progress(mut self, on: bool) -> Self {
        self.progress = on;
        self
    }

    /// The target URI.
    pub fn uri(&self) -> &Uri {
        &self.uri
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The request timeout.
    pub fn timeout(&self) -> Duration {
        self.request_timeout
    }

    fn clients(&self) -> usize {
        match self.mode {
            Mode::Closed { concurrency } => concurrency,
            Mode::Open {
                max_outstanding, ..
            } => max_outstanding,
        }
    }
}

/// Why a run could not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    message: String,
}

impl LoadError {
    /// An error with this message.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
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
    let err = |why: &str| Err(LoadError::new(format!("{uri}: {why}")));
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
    /// Failed requests by kind: `"http 503"`, `"timeout"`, `"connect"`,
    /// [`DROPPED`], ...
    pub errors: BTreeMap<String, u64>,
    /// Wall time from the start to the last answer.
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds (from the intended
    /// send time in an open loop).
    pub latency_us: Histogram<u64>,
    /// The mode the run used.
    pub mode: Mode,
    /// Requests the schedule called for (open loop; sent or dropped).
    pub scheduled: u64,
}

/// The figures of a [`LoadReport`], flat, for JSON output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: number of clients; open loop: most requests in flight.
    pub concurrency: usize,
    /// Open loop: the target arrival rate per second.
    pub offered_per_s: Option<f64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (including dropped arrivals).
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
    fn empty(mode: Mode) -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            mode,
            scheduled: 0,
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

    /// Successful requests whose latency was at least `ms` milliseconds.
    pub fn count_at_least_ms(&self, ms: f64) -> u64 {
        let us = (ms * 1000.0) as u64;
        self.latency_us
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= us)
            .map(|v| v.count_at_value())
            .sum()
    }

    /// The report's figures, flat.
    pub fn summary(&self) -> Summary {
        let (mode, concurrency, offered_per_s) = match self.mode {
            Mode::Closed { concurrency } => ("closed", concurrency, None),
            Mode::Open {
                rate,
                max_outstanding,
                ..
            } => ("open", max_outstanding, Some(rate)),
        };
        Summary {
            mode,
            concurrency,
            offered_per_s,
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

    fn merge(&mut self, other: Tally) {
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
        match self.offered_per_s {
            Some(rate) => write!(f, "offered {rate:>8.1}/s")?,
            None => write!(f, "clients {:>4}", self.concurrency)?,
        }
        write!(
            f,
            "  ok {:>7}  errors {:>5}  {:>9.1} items/s  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms",
            self.ok, self.errors, self.items_per_s, self.p50_ms, self.p90_ms, self.p99_ms
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
        .map_err(|e| LoadError::new(e.to_string()))?;
    send_http(client, req, Duration::from_secs(10))
        .await
        .map_err(|kind| LoadError::new(format!("GET {uri}: {kind}")))
}

/// A boxed, sendable future.
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// What a run sends to: one call is one request, answered with `Ok` or
/// the error kind used as a report key (`"http 503"`, `"timeout"`...).
pub trait Target: Send + Sync + 'static {
    /// Sends request number `seq` (0, 1, ...) and waits for its answer.
    fn send(&self, seq: u64) -> BoxFuture<Result<(), String>>;
}

/// HTTP requests to one URI with [`Payloads`] in turn.
#[derive(Debug, Clone)]
pub struct HttpTarget {
    client: HttpClient,
    uri: Uri,
    method: Method,
    payloads: Payloads,
    timeout: Duration,
}

impl HttpTarget {
    /// The target of `config` (its URI, method and bodies) on `client`.
    pub fn new(client: HttpClient, config: &LoadConfig) -> Result<Self, LoadError> {
        ensure_loopback(&config.uri)?;
        Ok(Self {
            client,
            uri: config.uri.clone(),
            method: config.method.clone(),
            payloads: config.payloads.clone(),
            timeout: config.request_timeout,
        })
    }
}

impl Target for HttpTarget {
    fn send(&self, seq: u64) -> BoxFuture<Result<(), String>> {
        let payload = self.payloads.get(seq);
        let mut builder = Request::builder()
            .method(self.method.clone())
            .uri(self.uri.clone());
        if let Some(ct) = &payload.content_type {
            builder = builder.header(hyper::header::CONTENT_TYPE, ct.clone());
        }
        for (name, value) in &payload.headers {
            builder = builder.header(name.clone(), value.clone());
        }
        let req = builder.body(Full::new(payload.body.clone()));
        let client = self.client.clone();
        let timeout = self.timeout;
        Box::pin(async move {
            let req = req.map_err(|_| "request".to_owned())?;
            send_http(&client, req, timeout).await.map(drop)
        })
    }
}

/// Runs the load described by `config` and reports what it measured.
pub async fn run(config: &LoadConfig) -> Result<LoadReport, LoadError> {
    run_with(&http_client(config.clients().min(4096)), config).await
}

/// Like [`run`], on a given client (so runs can share warm connections).
pub async fn run_with(client: &HttpClient, config: &LoadConfig) -> Result<LoadReport, LoadError> {
    let target = Arc::new(HttpTarget::new(client.clone(), config)?);
    run_target(target, config).await
}

/// Runs `config`'s mode, duration and request budget against any target
/// (its URI, method and bodies are the target's business).
pub async fn run_target(
    target: Arc<dyn Target>,
    config: &LoadConfig,
) -> Result<LoadReport, LoadError> {
    ensure_loopback(&config.uri)?;
    let live = Arc::new(Live::default());
    let bar = config
        .progress
        .then(|| progress::Progress::start(config.duration, Arc::clone(&live)));
    let start = Instant::now();
    let mut report = LoadReport::empty(config.mode);
    match config.mode {
        Mode::Closed { concurrency } => {
            let budget = Arc::new(AtomicU64::new(0));
            let stop_at = start + config.duration;
            let mut clients = JoinSet::new();
            for _ in 0..concurrency {
                let target = Arc::clone(&target);
                let budget = Arc::clone(&budget);
                let live = Arc::clone(&live);
                let max = config.max_requests;
                clients.spawn(closed_client(target, budget, max, stop_at, live));
            }
            while let Some(tally) = clients.join_next().await {
                let tally =
                    tally.map_err(|e| LoadError::new(format!("a client task failed: {e}")))?;
                report.merge(tally);
            }
        }
        Mode::Open {
            rate,
            max_outstanding,
            seed,
        } => {
            let schedule = PoissonSchedule::new(rate, seed)?;
            let (tally, scheduled) =
                open_loop(target, schedule, config, max_outstanding, start, &live).await?;
            report.merge(tally);
            report.scheduled = scheduled;
        }
    }
    report.elapsed = start.elapsed();
    if let Some(bar) = bar {
        bar.finish();
    }
    Ok(report)
}

/// Counters the progress bar reads while a run goes on.
#[derive(Debug, Default)]
struct Live {
    ok: AtomicU64,
    errors: AtomicU64,
}

struct Tally {
    ok: u64,
    errors: BTreeMap<String, u64>,
    latency_us: Histogram<u64>,
}

impl Tally {
    fn new() -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            latency_us: new_histogram(),
        }
    }

    fn record(&mut self, result: Result<(), String>, latency: Duration, live: &Live) {
        match result {
            Ok(()) => {
                self.ok += 1;
                live.ok.fetch_add(1, Ordering::Relaxed);
                let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
                self.latency_us
                    .saturating_record(us.clamp(1, MAX_LATENCY_US));
            }
            Err(kind) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                *self.errors.entry(kind).or_default() += 1;
            }
        }
    }
}

async fn closed_client(
    target: Arc<dyn Target>,
    budget: Arc<AtomicU64>,
    max_requests: Option<u64>,
    stop_at: Instant,
    live: Arc<Live>,
) -> Tally {
    let mut tally = Tally::new();
    while Instant::now() < stop_at {
        let seq = budget.fetch_add(1, Ordering::Relaxed);
        if max_requests.is_some_and(|max| seq >= max) {
            break;
        }
        let sent = Instant::now();
        let result = target.send(seq).await;
        tally.record(result, sent.elapsed(), &live);
    }
    tally
}

/// Sends each scheduled arrival at its intended time (or at once when the
/// loop is late), records latency from the intended time, and drops
/// arrivals while `max_outstanding` requests are in flight. Returns the
/// tally and the number of arrivals scheduled.
async fn open_loop(
    target: Arc<dyn Target>,
    schedule: PoissonSchedule,
    config: &LoadConfig,
    max_outstanding: usize,
    start: Instant,
    live: &Arc<Live>,
) -> Result<(Tally, u64), LoadError> {
    let stop_at = start + config.duration;
    let slots = Arc::new(Semaphore::new(max_outstanding));
    let mut in_flight: JoinSet<(Result<(), String>, Duration)> = JoinSet::new();
    let mut tally = Tally::new();
    let mut scheduled = 0;
    let finished = |tally: &mut Tally, done: Result<(Result<(), String>, Duration), _>| {
        done.map(|(result, latency)| tally.record(result, latency, live))
            .map_err(|e| LoadError::new(format!("a request task failed: {e}")))
    };
    for offset in schedule {
        let intended = start + offset;
        if intended >= stop_at || config.max_requests.is_some_and(|max| scheduled >= max) {
            break;
        }
        let seq = scheduled;
        scheduled += 1;
        tokio::time::sleep_until(intended).await;
        while let Some(done) = in_flight.try_join_next() {
            finished(&mut tally, done)?;
        }
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                let request = target.send(seq);
                in_flight.spawn(async move {
                    let result = request.await;
                    drop(slot);
                    (result, intended.elapsed())
                });
            }
            Err(_) => tally.record(Err(DROPPED.to_owned()), Duration::ZERO, live),
        }
    }
    while let Some(done) = in_flight.join_next().await {
        finished(&mut tally, done)?;
    }
    Ok((tally, scheduled))
}

/// One HTTP exchange; `Err` holds the error kind used as a report key.
pub async fn send_http(
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
        let mut report = LoadReport::empty(Mode::Closed { concurrency: 4 });
        let mut tally = Tally::new();
        tally.ok = 100;
        tally.errors.insert("http 503".to_owned(), 3);
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
        assert_eq!(report.count_at_least_ms(90.0), 11);
        assert_eq!(s.mode, "closed");
        assert_eq!(s.offered_per_s, None);
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
