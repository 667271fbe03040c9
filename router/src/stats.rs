//! Per-backend statistics: `metrics` crate emission plus an in-process
//! snapshot that the [`Rollout`](crate::Rollout) controller analyses.
//!
//! # Metric names
//!
//! Every metric carries the labels `split` (the split's name) and `backend`.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `convoy_router_requests_total` | counter | requests dispatched to the backend |
//! | `convoy_router_errors_total` | counter | requests that completed with an error |
//! | `convoy_router_latency_seconds` | histogram | time from dispatch to completion |
//! | `convoy_router_spillover_total` | counter | requests picked for this backend that went to another one because it was not ready |
//! | `convoy_router_overrides_total` | counter | requests forced to this backend by an override |
//! | `convoy_router_weight` | gauge | the backend's current weight |
//!
//! Metric handles are registered when the backend is added, so install the
//! `metrics` recorder before building the split.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;

use crate::hash::DistinctKeys;

/// Name of the request counter.
pub const REQUESTS_TOTAL: &str = "convoy_router_requests_total";
/// Name of the error counter.
pub const ERRORS_TOTAL: &str = "convoy_router_errors_total";
/// Name of the latency histogram (seconds).
pub const LATENCY_SECONDS: &str = "convoy_router_latency_seconds";
/// Name of the spillover counter.
pub const SPILLOVER_TOTAL: &str = "convoy_router_spillover_total";
/// Name of the override counter.
pub const OVERRIDES_TOTAL: &str = "convoy_router_overrides_total";
/// Name of the weight gauge.
pub const WEIGHT: &str = "convoy_router_weight";

/// Latencies are kept in microseconds, 1 µs ..= 1 h, 2 significant digits.
const LATENCY_MAX_US: u64 = 3_600_000_000;

fn new_histogram() -> Histogram<u64> {
    // Constant, valid bounds: construction cannot fail.
    Histogram::new_with_bounds(1, LATENCY_MAX_US, 2).expect("valid histogram bounds")
}

#[derive(Debug)]
struct Handles {
    requests: metrics::Counter,
    errors: metrics::Counter,
    latency: metrics::Histogram,
    spillover: metrics::Counter,
    overrides: metrics::Counter,
    weight: metrics::Gauge,
}

/// Live counters of one backend, shared by every clone of a split.
#[derive(Debug)]
pub(crate) struct BackendStats {
    name: Arc<str>,
    requests: AtomicU64,
    errors: AtomicU64,
    spilled: AtomicU64,
    overridden: AtomicU64,
    keyed: AtomicU64,
    latency: Mutex<Histogram<u64>>,
    keys: DistinctKeys,
    handles: Handles,
}

impl BackendStats {
    pub(crate) fn new(split: &Arc<str>, name: &Arc<str>) -> Self {
        let labels = [("split", split.to_string()), ("backend", name.to_string())];
        Self {
            name: name.clone(),
            requests: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            spilled: AtomicU64::new(0),
            overridden: AtomicU64::new(0),
            keyed: AtomicU64::new(0),
            latency: Mutex::new(new_histogram()),
            keys: DistinctKeys::default(),
            handles: Handles {
                requests: metrics::counter!(REQUESTS_TOTAL, &labels),
                errors: metrics::counter!(ERRORS_TOTAL, &labels),
                latency: metrics::histogram!(LATENCY_SECONDS, &labels),
                spillover: metrics::counter!(SPILLOVER_TOTAL, &labels),
                overrides: metrics::counter!(OVERRIDES_TOTAL, &labels),
                weight: metrics::gauge!(WEIGHT, &labels),
            },
        }
    }

    pub(crate) fn on_dispatch(&self) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.handles.requests.increment(1);
    }

    pub(crate) fn on_key(&self, hash: u64) {
        self.keyed.fetch_add(1, Ordering::Relaxed);
        self.keys.insert(hash);
    }

    pub(crate) fn on_override(&self) {
        self.overridden.fetch_add(1, Ordering::Relaxed);
        self.handles.overrides.increment(1);
    }

    pub(crate) fn on_spill(&self) {
        self.spilled.fetch_add(1, Ordering::Relaxed);
        self.handles.spillover.increment(1);
    }

    pub(crate) fn on_complete(&self, ok: bool, latency: Duration) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.handles.errors.increment(1);
        }
        self.handles.latency.record(latency.as_secs_f64());
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.latency
            .lock()
            .saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    pub(crate) fn set_weight(&self, weight: f64) {
        self.handles.weight.set(weight);
    }

    pub(crate) fn snapshot(&self, weight: f64) -> BackendSnapshot {
        BackendSnapshot {
            name: self.name.to_string(),
            weight,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            spillover: self.spilled.load(Ordering::Relaxed),
            overridden: self.overridden.load(Ordering::Relaxed),
            keyed_requests: self.keyed.load(Ordering::Relaxed),
            distinct_keys: self.keys.estimate(),
            latency: LatencyHistogram(self.latency.lock().clone()),
        }
    }
}

/// Latency distribution of a backend (microsecond resolution, 2 significant digits).
#[derive(Clone)]
pub struct LatencyHistogram(Histogram<u64>);

impl std::fmt::Debug for LatencyHistogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LatencyHistogram")
            .field("count", &self.count())
            .field("p50", &self.quantile(0.5))
            .field("p99", &self.quantile(0.99))
            .finish()
    }
}

impl Default for LatencyHistogram {
    fn default() -> Self {
        Self(new_histogram())
    }
}

impl LatencyHistogram {
    /// Number of recorded completions.
    pub fn count(&self) -> u64 {
        self.0.len()
    }

    /// Latency at quantile `q` (clamped to `0.0..=1.0`); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.0.is_empty() {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        Duration::from_micros(self.0.value_at_quantile(q))
    }

    /// Largest recorded latency.
    pub fn max(&self) -> Duration {
        Duration::from_micros(self.0.max())
    }

    /// Records one latency (used by tests and custom analyses).
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(us.clamp(1, LATENCY_MAX_US));
    }

    fn since(&self, earlier: &Self) -> Self {
        let mut h = self.0.clone();
        // `earlier` is a prefix of `self` unless the stats were replaced;
        // in that case keep the whole histogram.
        if h.subtract(&earlier.0).is_err() {
            return self.clone();
        }
        Self(h)
    }
}

/// A point-in-time view of one backend's counters.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct BackendSnapshot {
    /// Backend name.
    pub name: String,
    /// Current weight.
    pub weight: f64,
    /// Requests dispatched to this backend.
    pub requests: u64,
    /// Requests that completed with an error.
    pub errors: u64,
    /// Requests picked for this backend that went elsewhere because it was not ready.
    pub spillover: u64,
    /// Requests forced here by an override.
    pub overridden: u64,
    /// Requests that carried a sticky key.
    pub keyed_requests: u64,
    /// Estimated number of distinct sticky keys seen (HyperLogLog, ~1.6 % error).
    pub distinct_keys: u64,
    /// Latency distribution of completed requests.
    pub latency: LatencyHistogram,
}

impl BackendSnapshot {
    /// Completed requests (successes plus errors) in this snapshot.
    pub fn completed(&self) -> u64 {
        self.latency.count()
    }

    /// Errors divided by completed requests; zero when nothing completed.
    pub fn error_rate(&self) -> f64 {
        let done = self.completed().max(self.errors);
        if done == 0 {
            0.0
        } else {
            self.errors as f64 / done as f64
        }
    }

    /// The activity between `earlier` and `self` (counters subtracted).
    /// `distinct_keys` stays cumulative: a sketch cannot be subtracted.
    pub fn since(&self, earlier: &BackendSnapshot) -> BackendSnapshot {
        BackendSnapshot {
            name: self.name.clone(),
            weight: self.weight,
            requests: self.requests.saturating_sub(earlier.requests),
            errors: self.errors.saturating_sub(earlier.errors),
            spillover: self.spillover.saturating_sub(earlier.spillover),
            overridden: self.overridden.saturating_sub(earlier.overridden),
            keyed_requests: self.keyed_requests.saturating_sub(earlier.keyed_requests),
            distinct_keys: self.distinct_keys,
            latency: self.latency.since(&earlier.latency),
        }
    }

    /// An empty snapshot for `name` (used as a baseline).
    pub fn empty(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            weight: 0.0,
            requests: 0,
            errors: 0,
            spillover: 0,
            overridden: 0,
            keyed_requests: 0,
            distinct_keys: 0,
            latency: LatencyHistogram::default(),
        }
    }
}

/// A point-in-time view of every backend of a split.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct SplitSnapshot {
    /// The split's name.
    pub split: String,
    /// One entry per backend, in table order.
    pub backends: Vec<BackendSnapshot>,
}

impl SplitSnapshot {
    /// The backend called `name`.
    pub fn backend(&self, name: &str) -> Option<&BackendSnapshot> {
        self.backends.iter().find(|b| b.name == name)
    }

    /// Share of dispatched requests per backend, in table order.
    pub fn request_shares(&self) -> Vec<(String, f64)> {
        let total: u64 = self.backends.iter().map(|b| b.requests).sum();
        self.backends
            .iter()
            .map(|b| (b.name.clone(), ratio(b.requests, total)))
            .collect()
    }

    /// Share of distinct sticky keys per backend, in table order.
    pub fn key_shares(&self) -> Vec<(String, f64)> {
        let total: u64 = self.backends.iter().map(|b| b.distinct_keys).sum();
        self.backends
            .iter()
            .map(|b| (b.name.clone(), ratio(b.distinct_keys, total)))
            .collect()
    }
}

fn ratio(a: u64, total: u64) -> f64 {
    if total == 0 {
        0.0
    } else {
        a as f64 / total as f64
    }
}
