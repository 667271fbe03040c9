//! Batcher configuration: a plain struct with a builder and serde support,
//! validated when it is built.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::adaptive::AdaptiveConfig;
use crate::error::{ConfigError, ConfigErrorKind};

/// Largest supported `queue_capacity` (tokio's semaphore limit, rounded down).
pub(crate) const MAX_QUEUE_CAPACITY: usize = 1 << 40;

/// Default bound on the extra passes that isolate a failure: enough to
/// single out one item in batches of up to 1024.
pub(crate) const DEFAULT_ISOLATION_PASSES: u32 = 10;
/// Most extra passes: a batch of `usize::MAX` items halves to one in 64.
pub(crate) const MAX_ISOLATION_PASSES: u32 = 64;

/// What a caller sees when the queue is at `queue_capacity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OverflowPolicy {
    /// `poll_ready` stays pending until there is room, like
    /// `tower::buffer::Buffer`. Put `load_shed` in front of the batcher to
    /// turn that into an immediate `Overloaded` error.
    #[default]
    Backpressure,
    /// `poll_ready` is always ready and a request that finds the queue full
    /// fails at once with [`QueueFull`](crate::QueueFull).
    Reject,
}

/// What a batch waits for while its oldest item may still wait
/// ([`max_wait`](BatchConfigBuilder::max_wait)).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WaitFor {
    /// A full batch (`max_batch_size`, or the adaptive cap when it is
    /// lower), or the largest preferred size the queue can fill.
    #[default]
    Full,
    /// As many callers as the batcher held at once lately, queued or in
    /// running batches (the peak over its last eight batches), at most a
    /// full batch. The callers a batch has just answered are expected
    /// back: N callers that each send their next request when the last
    /// is answered (a pipeline's workers, a closed-loop client) are
    /// batched N at a time instead of splitting into two halves that
    /// alternate, while a lone caller never waits, since it is all the
    /// load there was. Needs `max_wait` above zero, which bounds the wait
    /// when fewer come back.
    RecentLoad,
}

/// How a batcher forms and dispatches batches.
///
/// Build one with [`BatchConfig::builder`]; every value is checked there, so
/// a `BatchConfig` that exists is valid. Deserializing checks the same rules.
/// Durations are serialized as whole microseconds (`max_wait_us`,
/// `queue_timeout_us`).
///
/// | knob | default | meaning |
/// |---|---|---|
/// | `name` | `"default"` | label of this batcher's metrics and spans |
/// | `max_batch_size` | 32 | most items in one batch |
/// | `max_batch_cost` | none | most total cost in one batch (with a cost function) |
/// | `max_wait` | 0 | how long the oldest queued item may wait for a fuller batch |
/// | `wait_for` | `full` | what a batch waits for within `max_wait`: a full batch, or the recent load |
/// | `preferred_batch_sizes` | none | sizes to dispatch when the oldest item may still wait |
/// | `max_concurrent_batches` | 1 | batches running in the batch service at once |
/// | `queue_capacity` | 1024 | most items queued (admitted but not dispatched) |
/// | `queue_timeout` | none | deadline applied to every item from the moment it is queued |
/// | `overflow` | `backpressure` | wait for room or reject with `QueueFull` |
/// | `adaptive_batch_size` | off | keep batches at the size with the best measured throughput |
/// | `adaptive_profile` | none | service times measured before serving, where the adaptive cap starts |
/// | `failure_isolation` | on, at most 10 passes | split a failed batch and run the halves again, so only the items that fail alone get the error |
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "ConfigFields", into = "ConfigFields")]
pub struct BatchConfig {
    pub(crate) name: String,
    pub(crate) max_batch_size: usize,
    pub(crate) max_batch_cost: Option<u64>,
    pub(crate) max_wait: Duration,
    pub(crate) wait_for: WaitFor,
    pub(crate) preferred_batch_sizes: Vec<usize>,
    pub(crate) max_concurrent_batches: usize,
    pub(crate) queue_capacity: usize,
    pub(crate) queue_timeout: Option<Duration>,
    pub(crate) overflow: OverflowPolicy,
    pub(crate) adaptive: Option<AdaptiveConfig>,
    /// Service time of a batch of each size, measured before serving.
    pub(crate) adaptive_profile: Vec<(usize, Duration)>,
    /// Most extra passes per failed batch; `None`: failure isolation off.
    pub(crate) isolation_passes: Option<u32>,
}

impl Default for BatchConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            max_batch_size: 32,
            max_batch_cost: None,
            max_wait: Duration::ZERO,
            wait_for: WaitFor::Full,
            preferred_batch_sizes: Vec::new(),
            max_concurrent_batches: 1,
            queue_capacity: 1024,
            queue_timeout: None,
            overflow: OverflowPolicy::Backpressure,
            adaptive: None,
            adaptive_profile: Vec::new(),
            isolation_passes: Some(DEFAULT_ISOLATION_PASSES),
        }
    }
}

impl BatchConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> BatchConfigBuilder {
        BatchConfigBuilder {
            config: Self::default(),
        }
    }

    /// The name used as the `batcher` label of metrics and spans.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Most items in one batch.
    pub fn max_batch_size(&self) -> usize {
        self.max_batch_size
    }

    /// Most total cost in one batch, when a cost function is set.
    pub fn max_batch_cost(&self) -> Option<u64> {
        self.max_batch_cost
    }

    /// How long the oldest queued item may wait for a fuller batch.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// What a batch waits for while its oldest item may still wait.
    pub fn wait_for(&self) -> WaitFor {
        self.wait_for
    }

    /// Batch sizes preferred while the oldest item may still wait (sorted).
    pub fn preferred_batch_sizes(&self) -> &[usize] {
        &self.preferred_batch_sizes
    }

    /// Batches running in the batch service at once.
    pub fn max_concurrent_batches(&self) -> usize {
        self.max_concurrent_batches
    }

    /// Most items queued (admitted, not yet dispatched).
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// Deadline applied to every item from the moment it is queued.
    pub fn queue_timeout(&self) -> Option<Duration> {
        self.queue_timeout
    }

    /// What happens when the queue is full.
    pub fn overflow(&self) -> OverflowPolicy {
        self.overflow
    }

    /// The adaptive batch-size cap's settings, when it is on.
    pub fn adaptive_batch_size(&self) -> Option<AdaptiveConfig> {
        self.adaptive
    }

    /// The service times the adaptive cap starts from (see
    /// [`adaptive_profile`](BatchConfigBuilder::adaptive_profile)), by size.
    pub fn adaptive_profile(&self) -> &[(usize, Duration)] {
        &self.adaptive_profile
    }

    /// Whether a failed batch is split and run again so that only the
    /// items that fail alone get the error (see
    /// [`failure_isolation`](BatchConfigBuilder::failure_isolation)).
    pub fn failure_isolation(&self) -> bool {
        self.isolation_passes.is_some()
    }

    /// Most extra passes spent isolating the failures of one batch, when
    /// failure isolation is on.
    pub fn max_isolation_passes(&self) -> Option<u32> {
        self.isolation_passes
    }

    fn validate(mut self) -> Result<Self, ConfigError> {
        check_batch_size(self.max_batch_size)?;
        check_queue_capacity(self.queue_capacity)?;
        if self.max_concurrent_batches == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::MaxConcurrentBatches,
                "max_concurrent_batches must be at least 1",
            ));
        }
        self.preferred_batch_sizes.sort_unstable();
        self.preferred_batch_sizes.dedup();
        check_preferred(&self.preferred_batch_sizes, self.max_batch_size)?;
        if self.wait_for == WaitFor::RecentLoad && self.max_wait.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::MaxWait,
                "wait_for = recent_load needs max_wait above zero: it is the longest a batch \
                 waits for the callers it expects back",
            ));
        }
        if self.max_batch_cost == Some(0) {
            return Err(ConfigError::new(
                ConfigErrorKind::MaxBatchCost,
                "max_batch_cost must be at least 1",
            ));
        }
        if self.queue_timeout == Some(Duration::ZERO) {
            return Err(ConfigError::new(
                ConfigErrorKind::QueueTimeout,
                "queue_timeout must be above zero (leave it unset for no timeout)",
            ));
        }
        if let Some(adaptive) = &self.adaptive {
            adaptive.validate()?;
        }
        check_profile(&self.adaptive_profile, self.adaptive.is_some())?;
        self.adaptive_profile.sort_unstable();
        if let Some(n) = self.isolation_passes {
            if n == 0 || n > MAX_ISOLATION_PASSES {
                return Err(ConfigError::new(
                    ConfigErrorKind::FailureIsolation,
                    format!(
                        "max_isolation_passes must be in 1..={MAX_ISOLATION_PASSES}, got {n} \
                         (turn isolation off with failure_isolation(false))"
                    ),
                ));
            }
        }
        Ok(self)
    }
}

pub(crate) fn check_batch_size(n: usize) -> Result<(), ConfigError> {
    if n == 0 {
        return Err(ConfigError::new(
            ConfigErrorKind::MaxBatchSize,
            "max_batch_size must be at least 1",
        ));
    }
    Ok(())
}

pub(crate) fn check_queue_capacity(n: usize) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_QUEUE_CAPACITY {
        return Err(ConfigError::new(
            ConfigErrorKind::QueueCapacity,
            format!("queue_capacity must be in 1..={MAX_QUEUE_CAPACITY}, got {n}"),
        ));
    }
    Ok(())
}

pub(crate) fn check_preferred(sizes: &[usize], max_batch_size: usize) -> Result<(), ConfigError> {
    if let Some(&bad) = sizes.iter().find(|&&s| s == 0 || s > max_batch_size) {
        return Err(ConfigError::new(
            ConfigErrorKind::PreferredBatchSizes,
            format!("preferred batch size {bad} is outside 1..={max_batch_size}"),
        ));
    }
    Ok(())
}

fn check_profile(profile: &[(usize, Duration)], adaptive: bool) -> Result<(), ConfigError> {
    if profile.is_empty() {
        return Ok(());
    }
    let error = |message: String| ConfigError::new(ConfigErrorKind::AdaptiveBatchSize, message);
    if !adaptive {
        return Err(error(
            "adaptive_profile needs adaptive_batch_size: the profile is where the adaptive \
             cap starts"
                .to_owned(),
        ));
    }
    if let Some(&(size, took)) = profile.iter().find(|(n, d)| *n == 0 || d.is_zero()) {
        return Err(error(format!(
            "adaptive_profile: every batch size must be at least 1 and every duration above \
             zero, got ({size}, {took:?})"
        )));
    }
    Ok(())
}

/// Builder for [`BatchConfig`]; [`build`](Self::build) validates.
#[derive(Debug, Clone)]
pub struct BatchConfigBuilder {
    config: BatchConfig,
}

impl BatchConfigBuilder {
    /// Name used as the `batcher` label of metrics and spans (default `"default"`).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Most items in one batch (default 32, must be at least 1).
    pub fn max_batch_size(mut self, n: usize) -> Self {
        self.config.max_batch_size = n;
        self
    }

    /// Most total cost in one batch (default: no cost cap). Costs come from
    /// the layer's [`cost_fn`](crate::BatchLayer::cost_fn); without one every
    /// item costs 1. An item that alone costs more than the cap is sent in a
    /// batch of its own.
    pub fn max_batch_cost(mut self, cost: u64) -> Self {
        self.config.max_batch_cost = Some(cost);
        self
    }

    /// How long the oldest queued item may wait for a fuller batch
    /// (default zero: a batch goes out as soon as the batch service has a
    /// free slot, so a lone request at low load pays no timer).
    pub fn max_wait(mut self, wait: Duration) -> Self {
        self.config.max_wait = wait;
        self
    }

    /// What a batch waits for while its oldest item may still wait
    /// (default [`WaitFor::Full`]). [`WaitFor::RecentLoad`] waits only for
    /// as many callers as the batcher held at once lately, so that callers
    /// who send again as soon as they are answered share one batch, and a
    /// lone caller never waits; it needs `max_wait` above zero.
    pub fn wait_for(mut self, wait_for: WaitFor) -> Self {
        self.config.wait_for = wait_for;
        self
    }

    /// Batch sizes the batch service runs best at (for example sizes with
    /// compiled kernels). While the oldest item may still wait, the largest
    /// preferred size that the queue can fill is dispatched; when its wait
    /// runs out, whatever is queued goes. Each size must be in
    /// `1..=max_batch_size`.
    pub fn preferred_batch_sizes(mut self, sizes: impl IntoIterator<Item = usize>) -> Self {
        self.config.preferred_batch_sizes = sizes.into_iter().collect();
        self
    }

    /// Batches running in the batch service at once (default 1). While all
    /// run, the next batch keeps filling.
    pub fn max_concurrent_batches(mut self, n: usize) -> Self {
        self.config.max_concurrent_batches = n;
        self
    }

    /// Most items admitted but not yet dispatched (default 1024).
    pub fn queue_capacity(mut self, n: usize) -> Self {
        self.config.queue_capacity = n;
        self
    }

    /// A deadline applied to every item from the moment it is queued
    /// (default none). Combined with a per-request deadline, the earlier
    /// one wins.
    pub fn queue_timeout(mut self, timeout: Duration) -> Self {
        self.config.queue_timeout = Some(timeout);
        self
    }

    /// Wait for room (default) or reject with `QueueFull` when the queue is full.
    pub fn overflow(mut self, policy: OverflowPolicy) -> Self {
        self.config.overflow = policy;
        self
    }

    /// Keeps batches at the size where the batch service's measured
    /// throughput (items per second) is best, never above `max_batch_size`
    /// (default off). Use it when batching may not pay on every model and
    /// machine: a traced ResNet-50 on a 2-core CPU runs 10.0 images/s at
    /// batch 1 but 8.7 at batch 8 and 6.6 at batch 32, while a MiniLM
    /// encoder gains 3.6x from batching. The cap probes neighbouring
    /// power-of-two sizes now and then and follows a cost that changes;
    /// see the crate documentation for the schedule. The current cap is in
    /// [`BatchHandle::batch_size_cap`](crate::BatchHandle::batch_size_cap),
    /// the statistics and the `convoy_batcher_batch_size_cap` gauge.
    pub fn adaptive_batch_size(mut self, enabled: bool) -> Self {
        self.config.adaptive = enabled.then(AdaptiveConfig::default);
        self
    }

    /// Turns the adaptive batch-size cap on with tuned settings (see
    /// [`adaptive_batch_size`](Self::adaptive_batch_size)).
    pub fn adaptive(mut self, settings: AdaptiveConfig) -> Self {
        self.config.adaptive = Some(settings);
        self
    }

    /// Service times of a batch of each size measured before serving (a
    /// warm-up at sizes 1, 2, 4, … up to `max_batch_size`), so the
    /// adaptive cap starts at the size where the model is fastest instead
    /// of at `max_batch_size` and learns from live batches from there. A
    /// model that is fastest at batch 2 then serves at batch 2 from its
    /// first request, where the cap alone would need a few dozen batches to
    /// walk down. Needs [`adaptive_batch_size`](Self::adaptive_batch_size);
    /// every size must be at least 1 and every duration above zero. Sizes
    /// above `max_batch_size` are ignored.
    pub fn adaptive_profile(
        mut self,
        profile: impl IntoIterator<Item = (usize, Duration)>,
    ) -> Self {
        self.config.adaptive_profile = profile.into_iter().collect();
        self
    }

    /// When the batch service fails a whole batch (returns an error, panics
    /// or answers with the wrong number of results), split the batch in
    /// halves and run each again, halving what still fails, so that only
    /// the items that fail alone get the error and every other caller gets
    /// its answer (default on, at most 10 passes). Per-item errors in the
    /// batch service's response are answered as they are, never retried.
    ///
    /// Isolation sends requests again, so the batcher needs copies of them:
    /// it takes effect for layers built with
    /// [`BatchLayer::isolate_failures`](crate::BatchLayer::isolate_failures)
    /// (requests that are `Clone`); without it a failed batch fails all of
    /// its items. See the crate documentation for the cost.
    pub fn failure_isolation(mut self, enabled: bool) -> Self {
        self.config.isolation_passes = enabled.then_some(DEFAULT_ISOLATION_PASSES);
        self
    }

    /// Turns failure isolation on with at most `n` extra passes per failed
    /// batch (default 10, must be in `1..=64`). A pass runs again, in
    /// halves, every part of the batch that still fails; a batch of `n`
    /// items needs `⌈log2 n⌉` passes to single out an item. When the
    /// passes run out, the items of a part that still fails get its error.
    pub fn max_isolation_passes(mut self, n: u32) -> Self {
        self.config.isolation_passes = Some(n);
        self
    }

    /// Checks every value and returns the configuration.
    pub fn build(self) -> Result<BatchConfig, ConfigError> {
        self.config.validate()
    }
}

/// Serialized form of [`BatchConfig`]; every field is optional.
#[derive(Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ConfigFields {
    name: String,
    max_batch_size: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_batch_cost: Option<u64>,
    max_wait_us: u64,
    wait_for: WaitFor,
    preferred_batch_sizes: Vec<usize>,
    max_concurrent_batches: usize,
    queue_capacity: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    queue_timeout_us: Option<u64>,
    overflow: OverflowPolicy,
    adaptive_batch_size: bool,
    /// Tuned settings of the adaptive cap (implies `adaptive_batch_size`).
    #[serde(skip_serializing_if = "Option::is_none")]
    adaptive: Option<AdaptiveConfig>,
    /// `(batch size, microseconds)` pairs (see `adaptive_profile`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    adaptive_profile_us: Vec<(usize, u64)>,
    failure_isolation: bool,
    max_isolation_passes: u32,
}

impl Default for ConfigFields {
    fn default() -> Self {
        BatchConfig::default().into()
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

impl From<BatchConfig> for ConfigFields {
    fn from(c: BatchConfig) -> Self {
        Self {
            name: c.name,
            max_batch_size: c.max_batch_size,
            max_batch_cost: c.max_batch_cost,
            max_wait_us: micros(c.max_wait),
            wait_for: c.wait_for,
            preferred_batch_sizes: c.preferred_batch_sizes,
            max_concurrent_batches: c.max_concurrent_batches,
            queue_capacity: c.queue_capacity,
            queue_timeout_us: c.queue_timeout.map(micros),
            overflow: c.overflow,
            adaptive_batch_size: c.adaptive.is_some(),
            adaptive: c.adaptive.filter(|a| *a != AdaptiveConfig::default()),
            adaptive_profile_us: c
                .adaptive_profile
                .iter()
                .map(|&(n, d)| (n, micros(d)))
                .collect(),
            failure_isolation: c.isolation_passes.is_some(),
            max_isolation_passes: c.isolation_passes.unwrap_or(DEFAULT_ISOLATION_PASSES),
        }
    }
}

impl TryFrom<ConfigFields> for BatchConfig {
    type Error = ConfigError;

    fn try_from(f: ConfigFields) -> Result<Self, ConfigError> {
        BatchConfig {
            name: f.name,
            max_batch_size: f.max_batch_size,
            max_batch_cost: f.max_batch_cost,
            max_wait: Duration::from_micros(f.max_wait_us),
            wait_for: f.wait_for,
            preferred_batch_sizes: f.preferred_batch_sizes,
            max_concurrent_batches: f.max_concurrent_batches,
            queue_capacity: f.queue_capacity,
            queue_timeout: f.queue_timeout_us.map(Duration::from_micros),
            overflow: f.overflow,
            adaptive: f
                .adaptive
                .or(f.adaptive_batch_size.then(AdaptiveConfig::default)),
            adaptive_profile: f
                .adaptive_profile_us
                .into_iter()
                .map(|(n, us)| (n, Duration::from_micros(us)))
                .collect(),
            isolation_passes: f.failure_isolation.then_some(f.max_isolation_passes),
        }
        .validate()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid() {
        let c = BatchConfig::builder().build().unwrap();
        assert_eq!(c, BatchConfig::default());
        assert_eq!(c.max_batch_size(), 32);
        assert_eq!(c.queue_capacity(), 1024);
        assert_eq!(c.max_concurrent_batches(), 1);
        assert_eq!(c.max_wait(), Duration::ZERO);
        assert!(c.failure_isolation());
        assert_eq!(c.max_isolation_passes(), Some(DEFAULT_ISOLATION_PASSES));
    }

    #[test]
    fn a_profile_needs_the_adaptive_cap_and_positive_values() {
        let ms = Duration::from_millis;
        let kind = |b: BatchConfigBuilder| b.build().unwrap_err().kind();
        assert_eq!(
            kind(BatchConfig::builder().adaptive_profile([(1, ms(5))])),
            ConfigErrorKind::AdaptiveBatchSize
        );
        for bad in [(0, ms(5)), (4, Duration::ZERO)] {
            assert_eq!(
                kind(
                    BatchConfig::builder()
                        .adaptive_batch_size(true)
                        .adaptive_profile([(1, ms(5)), bad])
                ),
                ConfigErrorKind::AdaptiveBatchSize
            );
        }
        let c = BatchConfig::builder()
            .adaptive_batch_size(true)
            .adaptive_profile([(4, ms(20)), (1, ms(5))])
            .build()
            .unwrap();
        assert_eq!(c.adaptive_profile(), &[(1, ms(5)), (4, ms(20))]);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("adaptive_profile_us"), "{json}");
        let back: BatchConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);
        let plain = serde_json::to_string(&BatchConfig::default()).unwrap();
        assert!(!plain.contains("adaptive_profile_us"), "{plain}");
    }

    #[test]
    fn isolation_passes_are_checked_and_isolation_turns_off() {
        let kind = |b: BatchConfigBuilder| b.build().unwrap_err().kind();
        for bad in [0, MAX_ISOLATION_PASSES + 1] {
            assert_eq!(
                kind(BatchConfig::builder().max_isolation_passes(bad)),
                ConfigErrorKind::FailureIsolation
            );
        }
        let c = BatchConfig::builder()
            .max_isolation_passes(3)
            .build()
            .unwrap();
        assert_eq!(c.max_isolation_passes(), Some(3));
        let off = BatchConfig::builder()
            .failure_isolation(false)
            .build()
            .unwrap();
        assert!(!off.failure_isolation());
        assert_eq!(off.max_isolation_passes(), None);

        let json = serde_json::to_string(&off).unwrap();
        assert!(json.contains("\"failure_isolation\":false"), "{json}");
        assert_eq!(serde_json::from_str::<BatchConfig>(&json).unwrap(), off);
        let three: BatchConfig = serde_json::from_str(r#"{"max_isolation_passes": 3}"#).unwrap();
        assert_eq!(three.max_isolation_passes(), Some(3));
        let err =
            serde_json::from_str::<BatchConfig>(r#"{"max_isolation_passes": 0}"#).unwrap_err();
        assert!(err.to_string().contains("max_isolation_passes"), "{err}");
    }

    #[test]
    fn impossible_values_are_errors() {
        let kind = |b: BatchConfigBuilder| b.build().unwrap_err().kind();
        assert_eq!(
            kind(BatchConfig::builder().max_batch_size(0)),
            ConfigErrorKind::MaxBatchSize
        );
        assert_eq!(
            kind(BatchConfig::builder().queue_capacity(0)),
            ConfigErrorKind::QueueCapacity
        );
        assert_eq!(
            kind(BatchConfig::builder().max_concurrent_batches(0)),
            ConfigErrorKind::MaxConcurrentBatches
        );
        assert_eq!(
            kind(
                BatchConfig::builder()
                    .max_batch_size(8)
                    .preferred_batch_sizes([4, 16])
            ),
            ConfigErrorKind::PreferredBatchSizes
        );
        assert_eq!(
            kind(BatchConfig::builder().preferred_batch_sizes([0])),
            ConfigErrorKind::PreferredBatchSizes
        );
        assert_eq!(
            kind(BatchConfig::builder().max_batch_cost(0)),
            ConfigErrorKind::MaxBatchCost
        );
        assert_eq!(
            kind(BatchConfig::builder().queue_timeout(Duration::ZERO)),
            ConfigErrorKind::QueueTimeout
        );
    }

    #[test]
    fn preferred_sizes_are_sorted() {
        let c = BatchConfig::builder()
            .preferred_batch_sizes([16, 4, 8, 4])
            .build()
            .unwrap();
        assert_eq!(c.preferred_batch_sizes(), &[4, 8, 16]);
    }

    #[test]
    fn serde_round_trip_and_validation() {
        let c = BatchConfig::builder()
            .name("bert")
            .max_wait(Duration::from_millis(2))
            .queue_timeout(Duration::from_millis(50))
            .max_batch_cost(4096)
            .overflow(OverflowPolicy::Reject)
            .build()
            .unwrap();
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains("\"max_wait_us\":2000"), "{json}");
        let back: BatchConfig = serde_json::from_str(&json).unwrap();
        assert_eq!(back, c);

        let partial: BatchConfig = serde_json::from_str(r#"{"max_batch_size": 8}"#).unwrap();
        assert_eq!(partial.max_batch_size(), 8);
        assert_eq!(partial.queue_capacity(), 1024);

        let err = serde_json::from_str::<BatchConfig>(r#"{"max_batch_size": 0}"#).unwrap_err();
        assert!(err.to_string().contains("max_batch_size"), "{err}");
    }

    #[test]
    fn waiting_for_the_recent_load_needs_a_wait() {
        let err = BatchConfig::builder()
            .wait_for(WaitFor::RecentLoad)
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::MaxWait);
        assert!(err.to_string().contains("max_wait"), "{err}");
        let c = BatchConfig::builder()
            .wait_for(WaitFor::RecentLoad)
            .max_wait(Duration::from_millis(3))
            .build()
            .unwrap();
        assert_eq!(c.wait_for(), WaitFor::RecentLoad);
        let json = serde_json::to_string(&c).unwrap();
        assert!(json.contains(r#""wait_for":"recent_load""#), "{json}");
        assert_eq!(serde_json::from_str::<BatchConfig>(&json).unwrap(), c);
        let err =
            serde_json::from_str::<BatchConfig>(r#"{"wait_for": "recent_load"}"#).unwrap_err();
        assert!(err.to_string().contains("max_wait"), "{err}");
        assert_eq!(BatchConfig::default().wait_for(), WaitFor::Full);
    }
}
