use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One observation of load, for one replica or for a whole deployment.
///
/// Gauges (`ongoing`, `queued`, `running`) are the value at the time of the
/// sample; counters (`arrivals`, `completions`, `batches`, `batch_items`,
/// `batch_busy`) count what happened since the previous sample of the same
/// source; latency quantiles describe requests completed since the previous
/// sample. Unknown values are `None` (or zero for counters).
///
/// Build one with struct-update syntax:
///
/// ```
/// use convoy_autoscale::LoadSample;
/// let s = LoadSample { ongoing: 10.0, running: 8.0, queued: 2.0, arrivals: 40, ..Default::default() };
/// assert!(s.is_valid());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default)]
pub struct LoadSample {
    /// Requests in the system: queued + running (Ray Serve's "ongoing requests",
    /// Knative's "concurrency").
    pub ongoing: f64,
    /// Requests waiting for a slot or a batch.
    pub queued: f64,
    /// Requests being executed.
    pub running: f64,
    /// Requests that arrived since the previous sample.
    pub arrivals: u64,
    /// Requests that completed since the previous sample.
    pub completions: u64,
    /// Median latency of the requests completed since the previous sample.
    pub latency_p50: Option<Duration>,
    /// 90th percentile latency of the requests completed since the previous sample.
    pub latency_p90: Option<Duration>,
    /// 99th percentile latency of the requests completed since the previous sample.
    pub latency_p99: Option<Duration>,
    /// Mean time spent queued by the requests dispatched since the previous sample.
    pub queue_wait: Option<Duration>,
    /// Batches executed since the previous sample (0 when not batching or unknown).
    pub batches: u64,
    /// Items in those batches (mean batch size is `batch_items / batches`).
    pub batch_items: u64,
    /// Total execution time of those batches (mean cost per batch is `batch_busy / batches`).
    pub batch_busy: Duration,
    /// How many replicas contributed to this sample; `None` means "all ready replicas".
    /// Fewer reporting than ready replicas triggers HPA's missing-metric rules.
    pub replicas_reporting: Option<u32>,
}

impl LoadSample {
    /// A sample with only the ongoing-requests gauge set.
    pub fn ongoing(ongoing: f64) -> Self {
        Self {
            ongoing,
            ..Self::default()
        }
    }

    /// `true` when every gauge is finite and non-negative.
    ///
    /// Invalid samples (NaN, infinite or negative gauges) are rejected by the
    /// [`Window`](crate::Window) and count as missing data.
    pub fn is_valid(&self) -> bool {
        [self.ongoing, self.queued, self.running]
            .iter()
            .all(|v| v.is_finite() && *v >= 0.0)
    }

    /// Adds another source's sample into this one, to build a deployment-level
    /// sample from per-replica samples taken at the same time.
    ///
    /// Gauges and counters add up; latency quantiles keep the larger value (a
    /// conservative bound: the merged quantile cannot be computed from
    /// quantiles); `replicas_reporting` adds up, each `None` counting as one.
    pub fn merge(&mut self, other: &LoadSample) {
        self.ongoing += other.ongoing;
        self.queued += other.queued;
        self.running += other.running;
        self.arrivals = self.arrivals.saturating_add(other.arrivals);
        self.completions = self.completions.saturating_add(other.completions);
        self.latency_p50 = max_opt(self.latency_p50, other.latency_p50);
        self.latency_p90 = max_opt(self.latency_p90, other.latency_p90);
        self.latency_p99 = max_opt(self.latency_p99, other.latency_p99);
        self.queue_wait = max_opt(self.queue_wait, other.queue_wait);
        self.batches = self.batches.saturating_add(other.batches);
        self.batch_items = self.batch_items.saturating_add(other.batch_items);
        self.batch_busy = self.batch_busy.saturating_add(other.batch_busy);
        self.replicas_reporting = Some(
            self.replicas_reporting
                .unwrap_or(1)
                .saturating_add(other.replicas_reporting.unwrap_or(1)),
        );
    }

    /// Merges per-replica samples into one deployment-level sample.
    /// Returns `None` for an empty iterator.
    pub fn sum<'a>(samples: impl IntoIterator<Item = &'a LoadSample>) -> Option<LoadSample> {
        let mut iter = samples.into_iter();
        let mut total = *iter.next()?;
        total.replicas_reporting = Some(total.replicas_reporting.unwrap_or(1));
        for s in iter {
            total.merge(s);
        }
        Some(total)
    }
}

fn max_opt(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, None) => a,
        (None, b) => b,
    }
}

/// A gauge or latency carried by a [`LoadSample`], selectable for window aggregation.
///
/// Latencies are reported in seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Signal {
    /// [`LoadSample::ongoing`].
    Ongoing,
    /// [`LoadSample::queued`].
    Queued,
    /// [`LoadSample::running`].
    Running,
    /// [`LoadSample::latency_p50`], in seconds.
    LatencyP50,
    /// [`LoadSample::latency_p90`], in seconds.
    LatencyP90,
    /// [`LoadSample::latency_p99`], in seconds.
    LatencyP99,
    /// [`LoadSample::queue_wait`], in seconds.
    QueueWait,
}

impl Signal {
    /// The value of this signal in `sample`, if the sample carries it.
    pub fn value(self, sample: &LoadSample) -> Option<f64> {
        match self {
            Signal::Ongoing => Some(sample.ongoing),
            Signal::Queued => Some(sample.queued),
            Signal::Running => Some(sample.running),
            Signal::LatencyP50 => sample.latency_p50.map(|d| d.as_secs_f64()),
            Signal::LatencyP90 => sample.latency_p90.map(|d| d.as_secs_f64()),
            Signal::LatencyP99 => sample.latency_p99.map(|d| d.as_secs_f64()),
            Signal::QueueWait => sample.queue_wait.map(|d| d.as_secs_f64()),
        }
    }
}

/// A counter carried by a [`LoadSample`], turned into a per-second rate by
/// [`Window::rate`](crate::Window::rate).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Counter {
    /// [`LoadSample::arrivals`]: request arrival rate.
    Arrivals,
    /// [`LoadSample::completions`]: throughput.
    Completions,
}

impl Counter {
    pub(crate) fn value(self, sample: &LoadSample) -> u64 {
        match self {
            Counter::Arrivals => sample.arrivals,
            Counter::Completions => sample.completions,
        }
    }
}

/// A linear batch cost curve: executing a batch of `n` items takes `fixed + per_item · n`.
///
/// Learned from batcher statistics by [`Window::batch_cost`](crate::Window::batch_cost)
/// or configured in [`QueueModelConfig`](crate::QueueModelConfig).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BatchCost {
    /// Fixed cost per batch (`a`).
    pub fixed: Duration,
    /// Additional cost per item (`b`).
    pub per_item: Duration,
}

impl BatchCost {
    /// Creates a cost curve `fixed + per_item · n`.
    pub fn new(fixed: Duration, per_item: Duration) -> Self {
        Self { fixed, per_item }
    }

    /// Seconds to execute a batch of `n` items.
    pub fn seconds(&self, n: f64) -> f64 {
        self.fixed.as_secs_f64() + self.per_item.as_secs_f64() * n
    }
}
