//! `metrics`-crate instruments. Keys are built once per batcher; the
//! recorder is looked up per batch (not per item), so a recorder installed
//! after the batcher was built still sees every metric.

use metrics::{Counter, Gauge, Histogram, Key, Label, Level, Metadata};
use std::fmt;
use std::sync::Arc;

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
        }
    }

    pub(crate) fn batch_size(&self) -> Histogram {
        metrics::with_recorder(|r| r.register_histogram(&self.batch_size, &METADATA))
    }

    pub(crate) fn queue_wait(&self) -> Histogram {
        metrics::with_recorder(|r| r.register_histogram(&self.queue_wait, &METADATA))
    }

    pub(crate) fn service(&self) -> Histogram {
        metrics::with_recorder(|r| r.register_histogram(&self.service, &METADATA))
    }

    pub(crate) fn queue_depth(&self) -> Gauge {
        metrics::with_recorder(|r| r.register_gauge(&self.queue_depth, &METADATA))
    }

    pub(crate) fn in_flight(&self) -> Gauge {
        metrics::with_recorder(|r| r.register_gauge(&self.in_flight, &METADATA))
    }

    pub(crate) fn rejected(&self, reason: usize) -> Counter {
        metrics::with_recorder(|r| r.register_counter(&self.rejected[reason], &METADATA))
    }

    pub(crate) fn cancelled(&self) -> Counter {
        metrics::with_recorder(|r| r.register_counter(&self.cancelled, &METADATA))
    }

    pub(crate) fn batches(&self, outcome: usize) -> Counter {
        metrics::with_recorder(|r| r.register_counter(&self.batches[outcome], &METADATA))
    }
}
