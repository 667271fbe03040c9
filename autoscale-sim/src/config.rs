//! Simulator configuration: the replica model and the run settings.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Most concurrency slots a replica may have.
const MAX_SLOTS: u32 = 1024;
/// Largest batch size the simulator accepts.
const MAX_BATCH_SIZE: u32 = 65_536;

/// How one replica serves requests.
///
/// A replica has `slots` concurrency slots (Ray Serve's
/// `max_concurrent_batches`, a Triton instance group count). When a slot
/// frees up it takes up to `max_batch_size` queued requests at once
/// (batch-when-busy, as convoy-batcher and Triton do) and serves them in
/// `batch_overhead + per_item · n`, the affine cost curve convoy's
/// `QueueModel` policy learns. A new replica serves nothing for
/// `cold_start`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaModel {
    /// Batches a replica runs at the same time. Default 1 (Ray Serve's
    /// `max_concurrent_batches`, one Triton instance).
    pub slots: u32,
    /// Largest batch. Default 8.
    pub max_batch_size: u32,
    /// Fixed cost of a batch, `a` in `cost(n) = a + b·n`. Default 20 ms.
    pub batch_overhead: Duration,
    /// Cost per item, `b` in `cost(n) = a + b·n`. Default 5 ms.
    pub per_item: Duration,
    /// Time from starting a replica to its readiness. Default 30 s.
    pub cold_start: Duration,
}

impl Default for ReplicaModel {
    fn default() -> Self {
        Self {
            slots: 1,
            max_batch_size: 8,
            batch_overhead: Duration::from_millis(20),
            per_item: Duration::from_millis(5),
            cold_start: Duration::from_secs(30),
        }
    }
}

impl ReplicaModel {
    /// Service time of a batch of `n`.
    pub fn batch_cost(&self, n: u32) -> Duration {
        self.batch_overhead + self.per_item * n
    }

    /// The largest batch whose worst-case latency under saturation (wait
    /// for one batch, then run one: `2 · cost(n)`) fits in `slo`, at least 1.
    pub fn slo_batch_size(&self, slo: Duration) -> u32 {
        let mut n = self.max_batch_size.max(1);
        while n > 1 && self.batch_cost(n) * 2 > slo {
            n -= 1;
        }
        n
    }

    /// Requests per second one replica sustains while meeting `slo`: every
    /// slot busy with batches of [`slo_batch_size`](Self::slo_batch_size).
    pub fn capacity_rps(&self, slo: Duration) -> f64 {
        let n = self.slo_batch_size(slo);
        f64::from(self.slots) * f64::from(n) / self.batch_cost(n).as_secs_f64()
    }
}

/// Settings of a simulation run.
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale_sim::SimConfig;
///
/// let config = SimConfig::builder()
///     .seed(7)
///     .slo(Duration::from_millis(200))
///     .queue_capacity(5_000)
///     .build()
///     .unwrap();
/// assert_eq!(config.seed, 7);
/// assert!(SimConfig::builder().sample_interval(Duration::ZERO).build().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimConfig {
    /// Seed of the arrival process: same seed, same report. Default 1.
    pub seed: u64,
    /// Latency objective each request is judged against. Default 250 ms.
    pub slo: Duration,
    /// How replicas serve.
    pub replica: ReplicaModel,
    /// Requests that may wait in the deployment's queue; arrivals beyond it
    /// are dropped (and counted). Default 10 000.
    pub queue_capacity: usize,
    /// How often a load sample is fed to the autoscaler; must divide one
    /// minute. Default 1 s.
    pub sample_interval: Duration,
    /// Resolution of the report's timeline; a multiple of
    /// `sample_interval`. Default 10 s.
    pub timeline_interval: Duration,
    /// How long after the trace ends queued work may still be served.
    /// Default 300 s.
    pub drain: Duration,
}

impl Default for SimConfig {
    fn default() -> Self {
        Self {
            seed: 1,
            slo: Duration::from_millis(250),
            replica: ReplicaModel::default(),
            queue_capacity: 10_000,
            sample_interval: Duration::from_secs(1),
            timeline_interval: Duration::from_secs(10),
            drain: Duration::from_secs(300),
        }
    }
}

impl SimConfig {
    /// A builder starting from the defaults.
    pub fn builder() -> SimConfigBuilder {
        SimConfigBuilder {
            config: Self::default(),
        }
    }

    /// Checks every field; [`Simulation::new`](crate::Simulation::new)
    /// calls it.
    pub fn validate(&self) -> Result<(), SimConfigError> {
        let fail =
            |field: &'static str, reason: &'static str| Err(SimConfigError { field, reason });
        let r = &self.replica;
        let hour = Duration::from_secs(3600);
        let day = Duration::from_secs(86_400);
        if r.slots == 0 || r.slots > MAX_SLOTS {
            return fail("replica.slots", "must be in 1..=1024");
        }
        if r.max_batch_size == 0 || r.max_batch_size > MAX_BATCH_SIZE {
            return fail("replica.max_batch_size", "must be in 1..=65536");
        }
        if r.batch_overhead > hour {
            return fail("replica.batch_overhead", "must be at most one hour");
        }
        if r.per_item > hour {
            return fail("replica.per_item", "must be at most one hour");
        }
        if r.batch_cost(1).is_zero() {
            return fail("replica.batch_overhead", "batch cost must be > 0");
        }
        if r.cold_start > day {
            return fail("replica.cold_start", "must be at most one day");
        }
        if self.slo.is_zero() || self.slo > hour {
            return fail("slo", "must be > 0 and at most one hour");
        }
        if self.drain > day {
            return fail("drain", "must be at most one day");
        }
        if self.queue_capacity == 0 {
            return fail("queue_capacity", "must be at least 1");
        }
        let minute = Duration::from_secs(60).as_nanos();
        let sample = self.sample_interval.as_nanos();
        if sample == 0 || !minute.is_multiple_of(sample) {
            return fail("sample_interval", "must be > 0 and divide one minute");
        }
        let timeline = self.timeline_interval.as_nanos();
        if timeline == 0 || !timeline.is_multiple_of(sample) || self.timeline_interval > day {
            return fail(
                "timeline_interval",
                "must be a multiple of sample_interval, at most one day",
            );
        }
        Ok(())
    }
}

/// Builds a [`SimConfig`]; every setter documents its default on the field.
#[derive(Debug, Clone)]
pub struct SimConfigBuilder {
    config: SimConfig,
}

impl SimConfigBuilder {
    /// See [`SimConfig::seed`].
    pub fn seed(mut self, seed: u64) -> Self {
        self.config.seed = seed;
        self
    }

    /// See [`SimConfig::slo`].
    pub fn slo(mut self, slo: Duration) -> Self {
        self.config.slo = slo;
        self
    }

    /// See [`SimConfig::replica`].
    pub fn replica(mut self, replica: ReplicaModel) -> Self {
        self.config.replica = replica;
        self
    }

    /// See [`SimConfig::queue_capacity`].
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.config.queue_capacity = capacity;
        self
    }

    /// See [`SimConfig::sample_interval`].
    pub fn sample_interval(mut self, interval: Duration) -> Self {
        self.config.sample_interval = interval;
        self
    }

    /// See [`SimConfig::timeline_interval`].
    pub fn timeline_interval(mut self, interval: Duration) -> Self {
        self.config.timeline_interval = interval;
        self
    }

    /// See [`SimConfig::drain`].
    pub fn drain(mut self, drain: Duration) -> Self {
        self.config.drain = drain;
        self
    }

    /// Validates and returns the configuration.
    pub fn build(self) -> Result<SimConfig, SimConfigError> {
        self.config.validate()?;
        Ok(self.config)
    }
}

/// A [`SimConfig`] field has an invalid value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimConfigError {
    field: &'static str,
    reason: &'static str,
}

impl SimConfigError {
    /// The offending field, e.g. `"replica.slots"`.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for SimConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid simulator config: {} {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for SimConfigError {}
