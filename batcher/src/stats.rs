//! Cheap statistics for autoscalers and dashboards.
//!
//! Counters are atomics written by the worker once per batch; the recent
//! distributions are fixed-size rings behind a lock taken once per batch.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;
use serde::Serialize;

use crate::telemetry::Telemetry;

/// How many recent samples the distributions in [`BatchStats`] cover.
pub const RECENT_SAMPLES: usize = 1024;

/// Weight of the newest batch in the per-size service-time EWMA.
const EWMA_ALPHA: f64 = 0.2;
/// Per-batch decay of the samples in the `a + b·n` fit.
const FIT_DECAY: f64 = 0.99;

#[derive(Debug, Clone, Copy)]
pub(crate) enum Rejection {
    QueueFull = 0,
    DeadlineExceeded = 1,
    Closed = 2,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum Outcome {
    Ok = 0,
    Failed = 1,
    Panicked = 2,
}

#[derive(Debug)]
pub(crate) struct StatsState {
    pub(crate) admitted: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) batches: AtomicU64,
    pub(crate) cancelled: AtomicU64,
    pub(crate) rejected: [AtomicU64; 3],
    /// Extra passes run to isolate failures.
    pub(crate) isolation_passes: AtomicU64,
    /// Items that failed alone after their batch was split.
    pub(crate) isolated_failures: AtomicU64,
    /// Batches that failed as too large (the learned size limit).
    pub(crate) too_large: AtomicU64,
    /// Items the worker holds (drained from the inbound list, not dispatched).
    pub(crate) queued: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) in_flight_items: AtomicUsize,
    pub(crate) recent: Mutex<Recent>,
}

impl StatsState {
    pub(crate) fn new() -> Self {
        Self {
            admitted: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            cancelled: AtomicU64::new(0),
            rejected: Default::default(),
            isolation_passes: AtomicU64::new(0),
            isolated_failures: AtomicU64::new(0),
            too_large: AtomicU64::new(0),
            queued: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            in_flight_items: AtomicUsize::new(0),
            recent: Mutex::new(Recent::default()),
        }
    }

    pub(crate) fn reject(&self, why: Rejection, telemetry: &Telemetry) {
        self.reject_n(why, 1, telemetry);
    }

    pub(crate) fn reject_n(&self, why: Rejection, n: u64, telemetry: &Telemetry) {
        if n == 0 {
            return;
        }
        self.rejected[why as usize].fetch_add(n, Ordering::Relaxed);
        telemetry.rejected(why as usize).increment(n);
    }
}

/// A fixed ring of the most recent samples.
#[derive(Debug)]
pub(crate) struct Ring {
    buf: Vec<u64>,
    next: usize,
}

impl Default for Ring {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(RECENT_SAMPLES),
            next: 0,
        }
    }
}

impl Ring {
    pub(crate) fn push(&mut self, v: u64) {
        if self.buf.len() < RECENT_SAMPLES {
            self.buf.push(v);
        } else {
            self.buf[self.next] = v;
        }
        self.next = (self.next + 1) % RECENT_SAMPLES;
    }

    fn distribution(&self, scale: f64) -> Distribution {
        if self.buf.is_empty() {
            return Distribution::default();
        }
        let mut v = self.buf.clone();
        v.sort_unstable();
        let at = |q: f64| {
            let i = ((v.len() - 1) as f64 * q).round() as usize;
            v[i] as f64 * scale
        };
        let sum: f64 = v.iter().map(|&x| x as f64).sum();
        Distribution {
            samples: v.len(),
            mean: sum / v.len() as f64 * scale,
            min: v[0] as f64 * scale,
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: v[v.len() - 1] as f64 * scale,
        }
    }
}

#[derive(Debug, Default)]
pub(crate) struct Recent {
    pub(crate) batch_sizes: Ring,
    /// Nanoseconds.
    pub(crate) queue_waits: Ring,
    /// Batch size -> (EWMA seconds, samples).
    service: BTreeMap<usize, (f64, u64)>,
    fit: Fit,
}

impl Recent {
    pub(crate) fn record_service(&mut self, size: usize, took: Duration) {
        let secs = took.as_secs_f64();
        let entry = self.service.entry(size).or_insert((secs, 0));
        entry.0 += EWMA_ALPHA * (secs - entry.0);
        entry.1 += 1;
        self.fit.add(size as f64, secs);
    }
}

/// Exponentially decayed least squares of `seconds = a + b·size`.
#[derive(Debug, Default)]
struct Fit {
    w: f64,
    sn: f64,
    st: f64,
    snn: f64,
    snt: f64,
}

impl Fit {
    fn add(&mut self, n: f64, t: f64) {
        self.w = self.w * FIT_DECAY + 1.0;
        self.sn = self.sn * FIT_DECAY + n;
        self.st = self.st * FIT_DECAY + t;
        self.snn = self.snn * FIT_DECAY + n * n;
        self.snt = self.snt * FIT_DECAY + n * t;
    }

    fn solve(&self) -> Option<ServiceTimeFit> {
        let det = self.w * self.snn - self.sn * self.sn;
        // Needs at least two distinct batch sizes among recent batches.
        if self.w < 1.5 || det <= 1e-9 * self.w * self.w {
            return None;
        }
        let per_item = (self.w * self.snt - self.sn * self.st) / det;
        let fixed = (self.st - per_item * self.sn) / self.w;
        Some(ServiceTimeFit {
            fixed_seconds: fixed,
            per_item_seconds: per_item,
        })
    }
}

/// A summary of recent samples.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
#[non_exhaustive]
pub struct Distribution {
    /// How many samples (at most [`RECENT_SAMPLES`]).
    pub samples: usize,
    /// Mean.
    pub mean: f64,
    /// Smallest.
    pub min: f64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

/// Service time of recent batches of one size.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct SizeServiceTime {
    /// Items in the batch.
    pub batch_size: usize,
    /// Exponentially weighted mean of the batch service time, in seconds.
    pub ewma_seconds: f64,
    /// Batches of this size seen.
    pub batches: u64,
}

/// Least-squares fit `seconds = fixed_seconds + per_item_seconds · size`
/// over recent batches (older batches weigh less).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[non_exhaustive]
pub struct ServiceTimeFit {
    /// Fixed cost of a batch, in seconds.
    pub fixed_seconds: f64,
    /// Added cost of each item, in seconds.
    pub per_item_seconds: f64,
}

impl ServiceTimeFit {
    /// Predicted service time of a batch of `size` items.
    pub fn predict(&self, size: usize) -> Duration {
        let secs = self.fixed_seconds + self.per_item_seconds * size as f64;
        Duration::try_from_secs_f64(secs.max(0.0)).unwrap_or(Duration::MAX)
    }
}

/// Requests refused, by reason.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Rejections {
    /// Refused because the queue was full ([`QueueFull`](crate::QueueFull)).
    pub queue_full: u64,
    /// Expired while queued ([`DeadlineExceeded`](crate::DeadlineExceeded)).
    pub deadline_exceeded: u64,
    /// Arrived after the batcher closed ([`Closed`](crate::Closed)).
    pub closed: u64,
}

impl Rejections {
    /// All rejections together.
    pub fn total(&self) -> u64 {
        self.queue_full + self.deadline_exceeded + self.closed
    }
}

/// A snapshot of a batcher's load, from [`BatchHandle::stats`](crate::BatchHandle::stats).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[non_exhaustive]
pub struct BatchStats {
    /// The batcher's configured name.
    pub name: String,
    /// Items admitted and not yet dispatched (including cancelled items not
    /// yet swept out).
    pub queue_depth: usize,
    /// Current queue capacity.
    pub queue_capacity: usize,
    /// Current maximum batch size.
    pub max_batch_size: usize,
    /// The largest batch formed now: the adaptive cap when
    /// [`adaptive_batch_size`](crate::BatchConfigBuilder::adaptive_batch_size)
    /// is on, otherwise `max_batch_size`; never above the learned
    /// [`size_limit`](Self::size_limit).
    pub batch_size_cap: usize,
    /// Batches running in the batch service now.
    pub in_flight_batches: usize,
    /// Requests in those running batches, and requests of failed batches
    /// waiting to run again (failure isolation).
    pub in_flight_items: usize,
    /// Requests admitted to the queue, ever.
    pub admitted_total: u64,
    /// Requests answered by the batch service (with a result or its error), ever.
    pub completed_total: u64,
    /// Queued requests dropped because their caller went away, ever.
    pub cancelled_total: u64,
    /// Batches dispatched, ever.
    pub batches_total: u64,
    /// Requests refused, by reason, ever.
    pub rejected: Rejections,
    /// Extra passes run to isolate failures, ever: a pass runs again, in
    /// halves, the parts of one failed batch that still fail (see
    /// [`failure_isolation`](crate::BatchConfigBuilder::failure_isolation)).
    pub isolation_passes_total: u64,
    /// Requests that failed alone after their batch was split, ever: each
    /// got its own error while the rest of its batch got answers.
    pub isolated_failures_total: u64,
    /// The learned size limit, when the layer has one
    /// ([`BatchLayer::size_limit`](crate::BatchLayer::size_limit)): the
    /// largest batch the batch service is known to run without failing as
    /// too large.
    pub size_limit: Option<usize>,
    /// Batches that failed as too large, ever (with a size limit).
    pub too_large_batches_total: u64,
    /// Items per batch, over the last [`RECENT_SAMPLES`] batches.
    pub batch_size: Distribution,
    /// Seconds from admission to dispatch, over the last [`RECENT_SAMPLES`] items.
    pub queue_wait_seconds: Distribution,
    /// Service time per batch size (EWMA), ascending by size.
    pub service_time: Vec<SizeServiceTime>,
    /// `a + b·n` fit of the service time, once two sizes have been seen.
    pub service_time_fit: Option<ServiceTimeFit>,
}

impl BatchStats {
    /// All rejections together.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.total()
    }

    /// Requests in the system, queued or in a running batch: the
    /// "ongoing requests" signal autoscalers (Ray Serve's, for one) scale on.
    pub fn ongoing_requests(&self) -> usize {
        self.queue_depth + self.in_flight_items
    }
}

pub(crate) fn snapshot(
    state: &StatsState,
    name: &str,
    inbound: usize,
    queue_capacity: usize,
    max_batch_size: usize,
    batch_size_cap: usize,
    size_limit: Option<usize>,
) -> BatchStats {
    let recent = state.recent.lock();
    let batch_size = recent.batch_sizes.distribution(1.0);
    let queue_wait_seconds = recent.queue_waits.distribution(1e-9);
    let service_time = recent
        .service
        .iter()
        .map(|(&batch_size, &(ewma_seconds, batches))| SizeServiceTime {
            batch_size,
            ewma_seconds,
            batches,
        })
        .collect();
    let service_time_fit = recent.fit.solve();
    drop(recent);
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    BatchStats {
        name: name.to_owned(),
        queue_depth: inbound + state.queued.load(Ordering::Relaxed),
        queue_capacity,
        max_batch_size,
        batch_size_cap,
        in_flight_batches: state.in_flight.load(Ordering::Relaxed),
        in_flight_items: state.in_flight_items.load(Ordering::Relaxed),
        admitted_total: load(&state.admitted) + inbound as u64,
        completed_total: load(&state.completed),
        cancelled_total: load(&state.cancelled),
        batches_total: load(&state.batches),
        rejected: Rejections {
            queue_full: load(&state.rejected[0]),
            deadline_exceeded: load(&state.rejected[1]),
            closed: load(&state.rejected[2]),
        },
        isolation_passes_total: load(&state.isolation_passes),
        isolated_failures_total: load(&state.isolated_failures),
        size_limit,
        too_large_batches_total: load(&state.too_large),
        batch_size,
        queue_wait_seconds,
        service_time,
        service_time_fit,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_keeps_the_most_recent_samples() {
        let mut r = Ring::default();
        for i in 0..(RECENT_SAMPLES as u64 + 10) {
            r.push(i);
        }
        let d = r.distribution(1.0);
        assert_eq!(d.samples, RECENT_SAMPLES);
        assert_eq!(d.min, 10.0);
        assert_eq!(d.max, RECENT_SAMPLES as f64 + 9.0);
    }

    #[test]
    fn fit_recovers_a_linear_cost() {
        let mut f = Fit::default();
        assert!(f.solve().is_none());
        for n in [1usize, 8, 16, 32, 4, 2] {
            f.add(n as f64, 0.002 + 0.00005 * n as f64);
        }
        let fit = f.solve().unwrap();
        assert!((fit.fixed_seconds - 0.002).abs() < 1e-9, "{fit:?}");
        assert!((fit.per_item_seconds - 0.00005).abs() < 1e-9, "{fit:?}");
        assert_eq!(fit.predict(32), Duration::from_micros(3600));
    }

    #[test]
    fn one_size_gives_no_fit_but_an_ewma() {
        let mut r = Recent::default();
        r.record_service(8, Duration::from_millis(10));
        r.record_service(8, Duration::from_millis(20));
        assert!(r.fit.solve().is_none());
        let (ewma, n) = r.service[&8];
        assert_eq!(n, 2);
        assert!((ewma - 0.012).abs() < 1e-12, "{ewma}");
    }
}
