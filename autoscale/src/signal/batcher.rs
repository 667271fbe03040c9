//! Adapter from convoy-batcher's statistics to [`LoadSample`]s (feature `batcher`).

use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::{BatchHandle, BatchStats};
use parking_lot::Mutex;

use super::{LoadSample, SignalSource};

/// Turns a batcher's [`BatchStats`] into [`LoadSample`]s: a [`SignalSource`]
/// for the [`Autoscaler`](crate::Autoscaler), and the feed that lets
/// [`QueueModel`](crate::QueueModel) learn the batch cost curve.
///
/// Mapping (counters are differences since the previous sample; the first
/// sample reports zero counts):
///
/// | `LoadSample` | from `BatchStats` |
/// |---|---|
/// | `ongoing` | `ongoing_requests()` (`queue_depth + in_flight_items`) |
/// | `queued` | `queue_depth` |
/// | `running` | `in_flight_items` (exact, not estimated from the mean batch size) |
/// | `arrivals` | Δ `admitted_total` |
/// | `completions` | Δ `completed_total` |
/// | `batches`, `batch_items` | Δ `batches_total`, × `batch_size.mean` |
/// | `batch_busy` | batches × the fitted cost of the mean batch (`service_time_fit`), else the size-weighted EWMA |
/// | `queue_wait` | `queue_wait_seconds.mean` |
///
/// The batcher does not measure end-to-end latency, so latency quantiles are
/// `None`; pair it with a latency source (or `LoadSample::merge`) for
/// [`LatencySlo`](crate::LatencySlo).
#[derive(Debug, Clone)]
pub struct BatcherSource {
    handle: BatchHandle,
    previous: Option<BatchStats>,
}

impl BatcherSource {
    /// Reads statistics from `handle`.
    pub fn new(handle: BatchHandle) -> Self {
        Self {
            handle,
            previous: None,
        }
    }

    /// Converts one snapshot, given the previous one (for the counters).
    pub fn load_sample(stats: &BatchStats, previous: Option<&BatchStats>) -> LoadSample {
        let delta = |now: u64, prev: fn(&BatchStats) -> u64| {
            previous.map_or(0, |p| now.saturating_sub(prev(p)))
        };
        let mean_size = if stats.batch_size.samples > 0 && stats.batch_size.mean.is_finite() {
            stats.batch_size.mean.max(0.0)
        } else {
            0.0
        };
        let batches = delta(stats.batches_total, |p| p.batches_total);
        let batch_seconds = stats
            .service_time_fit
            .map(|fit| fit.fixed_seconds + fit.per_item_seconds * mean_size)
            .or_else(|| {
                let (sum, n) = stats.service_time.iter().fold((0.0, 0u64), |(s, n), t| {
                    (s + t.ewma_seconds * t.batches as f64, n + t.batches)
                });
                (n > 0).then(|| sum / n as f64)
            })
            .filter(|s| s.is_finite() && *s >= 0.0)
            .unwrap_or(0.0);
        let running = stats.in_flight_items as f64;
        let queued = stats.queue_depth as f64;
        LoadSample {
            ongoing: queued + running,
            queued,
            running,
            arrivals: delta(stats.admitted_total, |p| p.admitted_total),
            completions: delta(stats.completed_total, |p| p.completed_total),
            latency_p50: None,
            latency_p90: None,
            latency_p99: None,
            queue_wait: (stats.queue_wait_seconds.samples > 0)
                .then(|| Duration::try_from_secs_f64(stats.queue_wait_seconds.mean).ok())
                .flatten(),
            batches,
            batch_items: (batches as f64 * mean_size).round() as u64,
            batch_busy: Duration::try_from_secs_f64(batches as f64 * batch_seconds)
                .unwrap_or_default(),
            replicas_reporting: None,
        }
    }
}

impl SignalSource for BatcherSource {
    fn sample(&mut self, _now: Duration) -> Option<LoadSample> {
        let stats = self.handle.stats();
        let sample = Self::load_sample(&stats, self.previous.as_ref());
        self.previous = Some(stats);
        Some(sample)
    }
}

/// The batchers of every replica of a deployment as one [`SignalSource`]:
/// their samples summed ([`LoadSample::sum`]: gauges and counters add,
/// batch statistics add, so [`QueueModel`](crate::QueueModel) learns the
/// cost curve from all replicas).
///
/// Register each replica's batcher as it is made (e.g. in a
/// [`ReplicaSet`](crate::ReplicaSet) factory); a batcher that was closed or
/// whose worker ended (its replica was removed) gives its last sample and is
/// then forgotten. Clones share the registry.
///
/// ```
/// use convoy_autoscale::{BatcherSet, SignalSource};
/// use convoy_batcher::{batch_fn, BatchConfig};
/// use std::time::Duration;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let batchers = BatcherSet::new();
/// let replica = batch_fn(BatchConfig::builder().build()?, |items: Vec<u32>| async move {
///     Ok::<_, tower::BoxError>(items)
/// });
/// batchers.add(replica.handle());
/// assert_eq!(batchers.len(), 1);
/// let sample = batchers.clone().sample(Duration::ZERO).expect("one batcher");
/// assert_eq!(sample.replicas_reporting, Some(1));
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, Default)]
pub struct BatcherSet {
    sources: Arc<Mutex<Vec<BatcherSource>>>,
}

impl BatcherSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a replica's batcher.
    pub fn add(&self, handle: BatchHandle) {
        self.sources.lock().push(BatcherSource::new(handle));
    }

    /// Batchers registered and not yet forgotten.
    pub fn len(&self) -> usize {
        self.sources.lock().len()
    }

    /// Whether no batcher is registered.
    pub fn is_empty(&self) -> bool {
        self.sources.lock().is_empty()
    }
}

impl SignalSource for BatcherSet {
    fn sample(&mut self, now: Duration) -> Option<LoadSample> {
        let mut sources = self.sources.lock();
        let samples: Vec<LoadSample> = sources.iter_mut().filter_map(|s| s.sample(now)).collect();
        sources.retain(|s| !s.handle.is_closed());
        LoadSample::sum(&samples)
    }
}
