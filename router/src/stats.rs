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

/// Latency buckets: exact below 32 µs, then 16 log-linear sub-buckets per
/// power of two up to 2^36 µs (~19 h): at most 3.2 % error at the bucket
/// midpoint, 528 counters (4 KiB) per backend. Recording is one relaxed
/// atomic add, so the request path takes no lock (a mutex-guarded
/// `hdrhistogram` cost more than the routing decision itself).
const EXACT: u64 = 32;
const SUB_BITS: u32 = 4;
const MAX_EXP: u32 = 35;
const BUCKETS: usize = EXACT as usize + ((MAX_EXP - 4) as usize) * (1 << SUB_BITS);

fn bucket_of(us: u64) -> usize {
    if us < EXACT {
        return us as usize;
    }
    let e = (63 - us.leading_zeros()).min(MAX_EXP);
    let us = us.min((1u64 << (MAX_EXP + 1)) - 1);
    let sub = (us >> (e - SUB_BITS)) & ((1 << SUB_BITS) - 1);
    EXACT as usize + ((e - 5) as usize) * (1 << SUB_BITS) + sub as usize
}

/// Lower bound and width of a bucket, in µs.
fn bucket_range(idx: usize) -> (u64, u64) {
    if idx < EXACT as usize {
        return (idx as u64, 1);
    }
    let rel = idx - EXACT as usize;
    let e = (rel >> SUB_BITS) as u32 + 5;
    let sub = (rel & ((1 << SUB_BITS) - 1)) as u64;
    let width = 1u64 << (e - SUB_BITS);
    ((1u64 << e) + sub * width, width)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct AtomicHistogram {
    counts: Box<[AtomicU64]>,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        Self {
            counts: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
        }
    }
}

impl AtomicHistogram {
    fn record(&self, latency: Duration) {
        self.counts[bucket_of(micros(latency))].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> LatencyHistogram {
        LatencyHistogram {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
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
    completed: AtomicU64,
    latency: AtomicHistogram,
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
            completed: AtomicU64::new(0),
            latency: AtomicHistogram::default(),
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

    pub(crate) fn on_complete(&self, ok: bool, latency: Option<Duration>) {
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
            self.handles.errors.increment(1);
        }
        // A timed completion is counted by its histogram bucket alone: one
        // atomic add per completion either way.
        match latency {
            Some(latency) => {
                self.handles.latency.record(latency.as_secs_f64());
                self.latency.record(latency);
            }
            None => {
                self.completed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    pub(crate) fn set_weight(&self, weight: f64) {
        self.handles.weight.set(weight);
    }

    pub(crate) fn snapshot(&self, weight: f64) -> BackendSnapshot {
        let latency = self.latency.snapshot();
        BackendSnapshot {
            name: self.name.to_string(),
            weight,
            requests: self.requests.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed) + latency.count(),
            spillover: self.spilled.load(Ordering::Relaxed),
            overridden: self.overridden.load(Ordering::Relaxed),
            keyed_requests: self.keyed.load(Ordering::Relaxed),
            distinct_keys: self.keys.estimate(),
            latency,
        }
    }
}

/// Latency distribution of a backend: log-linear buckets, exact below
/// 32 µs and within ±3.2 % above.
#[derive(Clone, PartialEq, Eq)]
pub struct LatencyHistogram {
    counts: Box<[u64]>,
}

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
        Self {
            counts: vec![0; BUCKETS].into(),
        }
    }
}

impl LatencyHistogram {
    /// Number of recorded latencies.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Latency at quantile `q` (clamped to `0.0..=1.0`; NaN reads as 1.0),
    /// as the midpoint of its bucket; zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        let total = self.count();
        if total == 0 {
            return Duration::ZERO;
        }
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (idx, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                let (low, width) = bucket_range(idx);
                return Duration::from_micros(low + width / 2);
            }
        }
        Duration::ZERO
    }

    /// Largest recorded latency (bucket midpoint).
    pub fn max(&self) -> Duration {
        self.quantile(1.0)
    }

    /// Records one latency (used by tests and custom analyses).
    pub fn record(&mut self, latency: Duration) {
        self.counts[bucket_of(micros(latency))] += 1;
    }

    fn since(&self, earlier: &Self) -> Self {
        Self {
            counts: self
                .counts
                .iter()
                .zip(earlier.counts.iter())
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
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
    /// Requests that completed (successes plus errors).
    pub completed: u64,
    /// Requests picked for this backend that went elsewhere because it was not ready.
    pub spillover: u64,
    /// Requests forced here by an override.
    pub overridden: u64,
    /// Requests that carried a sticky key.
    pub keyed_requests: u64,
    /// Estimated number of distinct sticky keys seen (HyperLogLog, ~1.6 % error).
    pub distinct_keys: u64,
    /// Latency distribution of completed requests (empty when the split
    /// does not record latency).
    pub latency: LatencyHistogram,
}

impl BackendSnapshot {
    /// Errors divided by completed requests; zero when nothing completed.
    pub fn error_rate(&self) -> f64 {
        let done = self.completed.max(self.errors);
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
            completed: self.completed.saturating_sub(earlier.completed),
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
            completed: 0,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_cover_the_range_in_order() {
        let mut prev = 0;
        for us in (0..100_000u64).chain([1 << 30, 1 << 35, u64::MAX]) {
            let b = bucket_of(us);
            assert!(b < BUCKETS && b >= prev.min(b));
            if us < 100_000 {
                let (low, width) = bucket_range(b);
                assert!(
                    low <= us && us < low + width,
                    "{us} in bucket {b} = {low}+{width}"
                );
                assert!(width as f64 <= (low as f64 / 16.0).max(1.0));
            }
            prev = b;
        }
    }

    #[test]
    fn quantiles_are_within_the_bucket_error() {
        let mut h = LatencyHistogram::default();
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        for (q, want) in [(0.5, 50.0), (0.99, 99.0), (1.0, 100.0)] {
            let got = h.quantile(q).as_secs_f64() * 1000.0;
            assert!((got - want).abs() / want < 0.035, "q{q}: {got} vs {want}");
        }
        let mut earlier = LatencyHistogram::default();
        earlier.record(Duration::from_millis(1));
        assert_eq!(h.since(&earlier).count(), 99);
        assert_eq!(LatencyHistogram::default().quantile(0.5), Duration::ZERO);
    }
}
