//! `metrics`-crate instruments. Keys are built once per batcher. The worker
//! keeps registered handles and registers them again every
//! [`REFRESH`] so that a recorder installed after the batcher was built is
//! picked up; between refreshes recording costs no registry lookup.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

/// How often the worker registers its handles again.
pub(crate) const REFRESH: Duration = Duration::from_secs(1);

/// Histogram: items per dispatched batch.
pub const BATCH_SIZE: &str = "convoy_batcher_batch_size";
/// Histogram: seconds from admission to dispatch, per item.
pub const QUEUE_WAIT_SECONDS: &str = "convoy_batcher_queue_wait_seconds";
/// Histogram: seconds the batch service took per batch.
pub const BATCH_SERVICE_SECONDS: &str = "convoy_batcher_batch_service_seconds";
/// Gauge: items admitted and not yet dispatched.
pub const QUEUE_DEPTH: &str = "convoy_batcher_queue_depth";
/// Gauge: batches running in the batch service.
pub const IN_FLIGHT_BATCHES: &str = "convoy_batcher_in_flight_batches";
/// Counter: requests refused, by `reason` (`queue_full`, `deadline_exceeded`, `closed`).
pub const REJECTED_TOTAL: &str = "convoy_batcher_rejected_total";
/// Counter: queued requests whose caller went away before dispatch.
pub const CANCELLED_TOTAL: &str = "convoy_batcher_cancelled_total";
/// Counter: finished batches, by `outcome` (`ok`, `failed`, `panicked`).
pub const BATCHES_TOTAL: &str = "convoy_batcher_batches_total";
/// Gauge: the adaptive batch-size cap (only with
/// [`adaptive_batch_size`](crate::BatchConfigBuilder::adaptive_batch_size)).
pub const BATCH_SIZE_CAP: &str = "convoy_batcher_batch_size_cap";
/// Gauge: the learned size limit (only with
/// [`BatchLayer::size_limit`](crate::BatchLayer::size_limit)).
pub const SIZE_LIMIT: &str = "convoy_batcher_size_limit";
/// Counter: batches that failed as too large (with a size limit).
pub const TOO_LARGE_BATCHES_TOTAL: &str = "convoy_batcher_too_large_batches_total";

/// Counter: extra passes run to isolate failures (each runs again, in
/// halves, the parts of one failed batch that still fail).
pub const ISOLATION_PASSES_TOTAL: &str = "convoy_batcher_isolation_passes_total";
/// Counter: requests that failed alone after their batch was split.
pub const ISOLATED_FAILURES_TOTAL: &str = "convoy_batcher_isolated_failures_total";

static METADATA: Metadata<'static> =
    Metadata::new(module_path!(), Level::INFO, Some(module_path!()));

pub(crate) struct Telemetry {
    batch_size: Key,
    queue_wait: Key,
    service: Key,
    queue_depth: Key,
    in_flight: Key,
    rejected: [Key; 3],
    cancelled: Key,
    batches: [Key; 3],
    batch_size_cap: Key,
    size_limit: Key,
    too_large: Key,
    isolation_passes: Key,
    isolated_failures: Key,
}

impl fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn key(name: &'static str, batcher: &Arc<str>, extra: Option<(&'static str, &'static str)>) -> Key {
    let mut labels = vec![Label::new(
        "batcher",
        metrics::SharedString::from(batcher.clone()),
    )];
    if let Some((k, v)) = extra {
        labels.push(Label::new(k, v));
    }
    Key::from_parts(name, labels)
}

impl Telemetry {
    pub(crate) fn new(name: &Arc<str>) -> Self {
        Self {
            batch_size: key(BATCH_SIZE, name, None),
            queue_wait: key(QUEUE_WAIT_SECONDS, name, None),
            service: key(BATCH_SERVICE_SECONDS, name, None),
            queue_depth: key(QUEUE_DEPTH, name, None),
            in_flight: key(IN_FLIGHT_BATCHES, name, None),
            rejected: [
                key(REJECTED_TOTAL, name, Some(("reason", "queue_full"))),
                key(REJECTED_TOTAL, name, Some(("reason", "deadline_exceeded"))),
                key(REJECTED_TOTAL, name, Some(("reason", "closed"))),
            ],
            cancelled: key(CANCELLED_TOTAL, name, None),
            batches: [
                key(BATCHES_TOTAL, name, Some(("outcome", "ok"))),
                key(BATCHES_TOTAL, name, Some(("outcome", "failed"))),
                key(BATCHES_TOTAL, name, Some(("outcome", "panicked"))),
            ],
            batch_size_cap: key(BATCH_SIZE_CAP, name, None),
            size_limit: key(SIZE_LIMIT, name, None),
            too_large: key(TOO_LARGE_BATCHES_TOTAL, name, None),
            isolation_passes: key(ISOLATION_PASSES_TOTAL, name, None),
            isolated_failures: key(ISOLATED_FAILURES_TOTAL, name, None),
        }
    }

    pub(crate) fn rejected(&self, reason: usize) -> Counter {
        metrics::with_recorder(|r| r.register_counter(&self.rejected[reason], &METADATA))
    }
}

/// Handles the worker records into, refreshed every [`REFRESH`].
pub(crate) struct Handles {
    pub(crate) batch_size: Histogram,
    pub(crate) queue_wait: Histogram,
    pub(crate) service: Histogram,
    pub(crate) queue_depth: Gauge,
    pub(crate) in_flight: Gauge,
    pub(crate) cancelled: Counter,
    pub(crate) deadline_exceeded: Counter,
    pub(crate) batches: [Counter; 3],
    pub(crate) batch_size_cap: Gauge,
    pub(crate) size_limit: Gauge,
    pub(crate) too_large: Counter,
    pub(crate) isolation_passes: Counter,
    pub(crate) isolated_failures: Counter,
    refreshed: Option<Instant>,
}

impl fmt::Debug for Handles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Handles")
            .field("refreshed", &self.refreshed)
            .finish_non_exhaustive()
    }
}

impl Handles {
    pub(crate) fn new() -> Self {
        Self {
            batch_size: Histogram::noop(),
            queue_wait: Histogram::noop(),
            service: Histogram::noop(),
            queue_depth: Gauge::noop(),
            in_flight: Gauge::noop(),
            cancelled: Counter::noop(),
            deadline_exceeded: Counter::noop(),
            batches: [Counter::noop(), Counter::noop(), Counter::noop()],
            batch_size_cap: Gauge::noop(),
            size_limit: Gauge::noop(),
            too_large: Counter::noop(),
            isolation_passes: Counter::noop(),
            isolated_failures: Counter::noop(),
            refreshed: None,
        }
    }

    /// Registers again if [`REFRESH`] has passed since the last time; the
    /// adaptive cap gauge only when `cap` is given (and set to it), the
    /// size limit's gauge and counter only when `limit` is.
    pub(crate) fn refresh(
        &mut self,
        t: &Telemetry,
        now: Instant,
        cap: Option<usize>,
        limit: Option<usize>,
    ) {
        if self.refreshed.is_some_and(|at| now < at + REFRESH) {
            return;
        }
        self.refreshed = Some(now);
        metrics::with_recorder(|r| {
            self.batch_size = r.register_histogram(&t.batch_size, &METADATA);
            self.queue_wait = r.register_histogram(&t.queue_wait, &METADATA);
            self.service = r.register_histogram(&t.service, &METADATA);
            self.queue_depth = r.register_gauge(&t.queue_depth, &METADATA);
            self.in_flight = r.register_gauge(&t.in_flight, &METADATA);
            self.cancelled = r.register_counter(&t.cancelled, &METADATA);
            self.deadline_exceeded = r.register_counter(&t.rejected[1], &METADATA);
            for (h, k) in self.batches.iter_mut().zip(&t.batches) {
                *h = r.register_counter(k, &METADATA);
            }
            self.isolation_passes = r.register_counter(&t.isolation_passes, &METADATA);
            self.isolated_failures = r.register_counter(&t.isolated_failures, &METADATA);
            if let Some(cap) = cap {
                self.batch_size_cap = r.register_gauge(&t.batch_size_cap, &METADATA);
                self.batch_size_cap.set(cap as f64);
            }
            if let Some(limit) = limit {
                self.size_limit = r.register_gauge(&t.size_limit, &METADATA);
                self.size_limit.set(limit as f64);
                self.too_large = r.register_counter(&t.too_large, &METADATA);
            }
        });
    }

    /// Records per-item queue waits (ns): every item of a small batch, 16
    /// evenly spaced items of a larger one (recorders commonly record a
    /// weighted sample once per unit of weight, which would cost per item).
    pub(crate) fn record_waits(&self, waits: &[u64]) {
        const SAMPLES: usize = 16;
        let stride = waits.len().div_ceil(SAMPLES).max(1);
        for &w in waits.iter().step_by(stride) {
            self.queue_wait.record(w as f64 * 1e-9);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};

    #[test]
    fn queue_waits_are_sampled_per_batch() {
        let recorder = DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        let telemetry = Telemetry::new(&Arc::from("sampled"));
        metrics::with_local_recorder(&recorder, || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut handles = Handles::new();
                handles.refresh(&telemetry, Instant::now(), None, None);
                handles.record_waits(&(0..1000).collect::<Vec<u64>>());
                handles.record_waits(&[5, 6, 7]);
            });
        });
        let samples = snapshotter
            .snapshot()
            .into_vec()
            .into_iter()
            .find(|(k, ..)| k.key().name() == QUEUE_WAIT_SECONDS)
            .map(|(.., v)| match v {
                DebugValue::Histogram(v) => v.len(),
                _ => 0,
            });
        assert_eq!(samples, Some(16 + 3));
    }
}
