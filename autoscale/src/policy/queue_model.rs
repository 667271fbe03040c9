use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ceil_count, Policy, PolicyInput, Reason, Recommendation};
use crate::error::{non_zero, within, ConfigError, ConfigErrorKind};
use crate::signal::{BatchCost, Counter, Signal};

/// Largest replica count the model searches.
const SEARCH_LIMIT: u32 = 1 << 16;

/// Configuration of [`QueueModel`]. A convoy policy (no published system has a
/// batching-aware queueing model); the defaults are convoy's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueModelConfig {
    /// The latency objective (end-to-end, p99-like). Default 100 ms. > 0.
    pub slo: Duration,
    /// Keep the arrival rate at most this fraction of the replicas' maximum
    /// throughput (`max_batch_size / cost(max_batch_size)` per slot). Default `0.8`. Within `(0, 1]`.
    pub target_utilization: f64,
    /// The batch cost curve `cost(n) = fixed + per_item · n` to assume until one
    /// is learned (or always, with `learn_cost = false`). Default `None`.
    pub cost: Option<BatchCost>,
    /// Learn the cost curve from the batch statistics in the samples
    /// (`batches`, `batch_items`, `batch_busy`). Default `true`. A learned
    /// two-term fit wins over [`cost`](Self::cost); when the batch sizes seen
    /// do not spread enough for one, the configured curve is used, and
    /// without one the proportional curve through the observed mean
    /// (conservative at larger batches).
    pub learn_cost: bool,
    /// Look-back for learning the cost curve. Default 60 s. > 0.
    pub cost_look_back: Duration,
    /// Largest batch a replica forms (the batcher's `max_batch_size`). Default 32. ≥ 1.
    pub max_batch_size: u32,
    /// Batches a replica runs at once (the batcher's concurrent batches). Default 1. ≥ 1.
    pub concurrency: u32,
    /// Look-back for the arrival rate. Default 30 s. > 0.
    pub look_back: Duration,
    /// A short look-back whose rate is also considered (the larger of the two
    /// rates wins), for a fast reaction to spikes. Default 5 s. > 0, at most `look_back`.
    pub fast_look_back: Duration,
    /// The predicted tail queueing wait is this multiple of the M/D/1 mean
    /// wait. Default `3.0`. ≥ 1.
    pub tail_factor: f64,
    /// A queued backlog is planned to drain within this time (it adds
    /// `queued / backlog_drain` to the arrival rate). Default 10 s. > 0.
    pub backlog_drain: Duration,
    /// Look ahead: a significantly rising arrival rate (the last fast
    /// look-back against the one before, beyond three Poisson standard
    /// deviations) is projected linearly this far ahead, so replicas start
    /// before the load arrives. Set it to the replica cold-start time.
    /// Default 30 s; zero disables. Falling rates are never projected.
    pub lead_time: Duration,
    /// Hysteresis for scale-down: fewer replicas are recommended only if
    /// they would also meet `target_utilization · (1 − scale_down_tolerance)`.
    /// Default `0.1` (like HPA's tolerance). Within `[0, 1)`.
    pub scale_down_tolerance: f64,
}

impl Default for QueueModelConfig {
    fn default() -> Self {
        Self {
            slo: Duration::from_millis(100),
            target_utilization: 0.8,
            cost: None,
            learn_cost: true,
            cost_look_back: Duration::from_secs(60),
            max_batch_size: 32,
            concurrency: 1,
            look_back: Duration::from_secs(30),
            fast_look_back: Duration::from_secs(5),
            tail_factor: 3.0,
            backlog_drain: Duration::from_secs(10),
            lead_time: Duration::from_secs(30),
            scale_down_tolerance: 0.1,
        }
    }
}

impl QueueModelConfig {
    /// Sets [`slo`](Self::slo).
    pub fn slo(mut self, v: Duration) -> Self {
        self.slo = v;
        self
    }

    /// Sets [`target_utilization`](Self::target_utilization).
    pub fn target_utilization(mut self, v: f64) -> Self {
        self.target_utilization = v;
        self
    }

    /// Sets [`cost`](Self::cost).
    pub fn cost(mut self, v: Option<BatchCost>) -> Self {
        self.cost = v;
        self
    }

    /// Sets [`learn_cost`](Self::learn_cost).
    pub fn learn_cost(mut self, v: bool) -> Self {
        self.learn_cost = v;
        self
    }

    /// Sets [`cost_look_back`](Self::cost_look_back).
    pub fn cost_look_back(mut self, v: Duration) -> Self {
        self.cost_look_back = v;
        self
    }

    /// Sets [`max_batch_size`](Self::max_batch_size).
    pub fn max_batch_size(mut self, v: u32) -> Self {
        self.max_batch_size = v;
        self
    }

    /// Sets [`concurrency`](Self::concurrency).
    pub fn concurrency(mut self, v: u32) -> Self {
        self.concurrency = v;
        self
    }

    /// Sets [`look_back`](Self::look_back).
    pub fn look_back(mut self, v: Duration) -> Self {
        self.look_back = v;
        self
    }

    /// Sets [`fast_look_back`](Self::fast_look_back).
    pub fn fast_look_back(mut self, v: Duration) -> Self {
        self.fast_look_back = v;
        self
    }

    /// Sets [`tail_factor`](Self::tail_factor).
    pub fn tail_factor(mut self, v: f64) -> Self {
        self.tail_factor = v;
        self
    }

    /// Sets [`backlog_drain`](Self::backlog_drain).
    pub fn backlog_drain(mut self, v: Duration) -> Self {
        self.backlog_drain = v;
        self
    }

    /// Sets [`scale_down_tolerance`](Self::scale_down_tolerance).
    pub fn scale_down_tolerance(mut self, v: f64) -> Self {
        self.scale_down_tolerance = v;
        self
    }

    /// Sets [`lead_time`](Self::lead_time).
    pub fn lead_time(mut self, v: Duration) -> Self {
        self.lead_time = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_zero("slo", self.slo)?;
        within(
            "target_utilization",
            self.target_utilization,
            f64::MIN_POSITIVE,
            1.0,
        )?;
        non_zero("cost_look_back", self.cost_look_back)?;
        non_zero("look_back", self.look_back)?;
        non_zero("fast_look_back", self.fast_look_back)?;
        non_zero("backlog_drain", self.backlog_drain)?;
        within("tail_factor", self.tail_factor, 1.0, 1e6)?;
        within(
            "scale_down_tolerance",
            self.scale_down_tolerance,
            0.0,
            0.999,
        )?;
        if self.fast_look_back > self.look_back {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidWindow,
                "fast_look_back",
                "must not exceed look_back",
            ));
        }
        if self.max_batch_size == 0 || self.concurrency == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                if self.max_batch_size == 0 {
                    "max_batch_size"
                } else {
                    "concurrency"
                },
                "must be at least 1",
            ));
        }
        match self.cost {
            Some(c) if c.seconds(1.0) <= 0.0 => Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                "cost",
                "cost(1) must be > 0",
            )),
            None if !self.learn_cost => Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                "cost",
                "needed when learn_cost is false",
            )),
            _ => Ok(()),
        }
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<QueueModel, ConfigError> {
        QueueModel::new(self)
    }
}

/// A batching-aware queueing model: the fewest replicas that keep utilisation
/// and the predicted tail latency under the objective.
///
/// Inputs: the arrival rate `λ` (the larger of the look-back and fast
/// look-back rates and, when the rate rises significantly, its linear
/// projection `lead_time` ahead; plus `queued / backlog_drain` to drain a
/// backlog) and the
/// batch cost curve `cost(n) = a + b·n` (learned from batcher statistics in
/// the samples, else configured). Each of the `n · concurrency` batch slots
/// receives `r = λ / (n · concurrency)`. Replica count `n` is feasible when
///
/// - `r ≤ target_utilization · B / cost(B)` (B = `max_batch_size`), and
/// - the predicted tail latency is under the SLO, taking the better of two
///   regimes: unbatched M/D/1 with service `cost(1)`
///   (`cost(1) + tail_factor · ρ·cost(1) / (2(1−ρ))`, `ρ = r·cost(1)`) and
///   batch-when-busy at the fixed point `k = r·cost(k)` (`k = r·a / (1 − r·b)`,
///   `k ≤ B`), where a request waits for the running batch and then runs in
///   the next: `2·cost(k)`.
///
/// The smallest feasible `n` is found by binary search; below the current
/// count it must also be feasible at the stricter utilisation
/// `target_utilization · (1 − scale_down_tolerance)` (hysteresis). If the SLO cannot be
/// met at any count (`cost(1)` alone exceeds it), only the utilisation bound
/// is used. No arrivals and no backlog recommend zero (the engine's
/// `min_replicas` applies); no cost curve yet holds.
#[derive(Debug, Clone)]
pub struct QueueModel {
    config: QueueModelConfig,
}

impl QueueModel {
    /// Validates `config` and builds the policy.
    pub fn new(config: QueueModelConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &QueueModelConfig {
        &self.config
    }

    /// Predicted tail latency (seconds) of one batch slot receiving `r`
    /// requests/s; `None` when the slot is overloaded.
    pub fn predicted_latency(&self, cost: &BatchCost, r: f64) -> Option<f64> {
        let c = &self.config;
        let b_max = f64::from(c.max_batch_size);
        let c1 = cost.seconds(1.0);
        if r <= 0.0 {
            return Some(c1);
        }
        let rho = r * c1;
        let md1 = (rho < 1.0).then(|| c1 + c.tail_factor * rho * c1 / (2.0 * (1.0 - rho)));
        let (a, b) = (cost.fixed.as_secs_f64(), cost.per_item.as_secs_f64());
        let batched = if c.max_batch_size > 1 && r * b < 1.0 {
            let k = (r * a / (1.0 - r * b)).max(1.0);
            (k <= b_max).then(|| 2.0 * cost.seconds(k))
        } else {
            None
        };
        match (md1, batched) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }

    /// The smallest feasible count (feasibility is monotone in `n`).
    fn smallest_feasible(
        &self,
        cost: &BatchCost,
        lambda: f64,
        use_slo: bool,
        utilization: f64,
    ) -> Option<u32> {
        let c = &self.config;
        let b_max = f64::from(c.max_batch_size);
        let per_replica = f64::from(c.concurrency) * b_max / cost.seconds(b_max);
        // The utilisation bound alone gives a lower bound; the latency bound
        // can only raise it. Gallop up from there, then bisect.
        let mut lo = ceil_count(lambda / (per_replica * utilization)).clamp(1, SEARCH_LIMIT);
        if self.feasible(cost, lambda, lo, use_slo, utilization) {
            // Rounding may leave the bound one too high.
            while lo > 1 && self.feasible(cost, lambda, lo - 1, use_slo, utilization) {
                lo -= 1;
            }
            return Some(lo);
        }
        let mut hi = lo;
        loop {
            if hi >= SEARCH_LIMIT {
                return None;
            }
            lo = hi + 1;
            hi = hi.saturating_mul(2).min(SEARCH_LIMIT);
            if self.feasible(cost, lambda, hi, use_slo, utilization) {
                break;
            }
        }
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.feasible(cost, lambda, mid, use_slo, utilization) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        Some(lo)
    }

    fn feasible(
        &self,
        cost: &BatchCost,
        lambda: f64,
        n: u32,
        use_slo: bool,
        utilization: f64,
    ) -> bool {
        let c = &self.config;
        let slots = f64::from(n) * f64::from(c.concurrency);
        let r = lambda / slots;
        let b_max = f64::from(c.max_batch_size);
        let max_throughput = b_max / cost.seconds(b_max);
        if r > utilization * max_throughput {
            return false;
        }
        if !use_slo {
            return true;
        }
        self.predicted_latency(cost, r)
            .is_some_and(|l| l <= c.slo.as_secs_f64())
    }

    /// The arrival rate projected `lead_time` ahead when it is rising
    /// significantly; `None` otherwise.
    fn projected_rate(&self, input: &PolicyInput<'_>) -> Option<f64> {
        let c = &self.config;
        if c.lead_time.is_zero() {
            return None;
        }
        let f = c.fast_look_back;
        let earlier = input.now.checked_sub(f)?;
        let w = input.window;
        let recent = w.rate(input.now, f, Counter::Arrivals)?;
        let before = w.rate(earlier, f, Counter::Arrivals)?;
        let secs = f.as_secs_f64();
        // Three standard deviations of the difference of two Poisson rate estimates.
        let noise = 3.0 * ((recent + before) / secs).sqrt();
        let rise = recent - before;
        (rise > noise).then(|| recent + rise / secs * c.lead_time.as_secs_f64())
    }

    /// The cost curve: a genuine two-term fit of the recent batches, else the
    /// configured curve, else the proportional curve through the observed mean.
    fn cost(&self, input: &PolicyInput<'_>) -> Option<BatchCost> {
        let c = &self.config;
        let valid = |k: &BatchCost| k.seconds(1.0) > 0.0;
        if !c.learn_cost {
            return c.cost;
        }
        let view = input.window.view(input.now, c.cost_look_back);
        view.batch_cost_fit()
            .filter(valid)
            .or(c.cost)
            .or_else(|| view.batch_cost().filter(valid))
    }
}

impl Policy for QueueModel {
    fn name(&self) -> &str {
        "queue_model"
    }

    fn horizon(&self) -> Duration {
        self.config.look_back.max(self.config.cost_look_back)
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let c = &self.config;
        let w = input.window;
        let slow = w.rate(input.now, c.look_back, Counter::Arrivals);
        let fast = w.rate(input.now, c.fast_look_back, Counter::Arrivals);
        let queued = w.mean(input.now, c.fast_look_back, Signal::Queued);
        let rate = match (slow, fast) {
            (Some(s), Some(f)) => s.max(f),
            (s, f) => match s.or(f) {
                Some(r) => r,
                None => return input.hold("no_metrics"),
            },
        };
        let rate = rate.max(self.projected_rate(input).unwrap_or(0.0));
        let lambda = rate + queued.unwrap_or(0.0) / c.backlog_drain.as_secs_f64();
        let Some(cost) = self.cost(input) else {
            return input.hold("no_cost_model");
        };
        let slo = c.slo.as_secs_f64();
        if lambda <= 0.0 {
            return Recommendation::new(0, Reason::new("idle").with_values(0.0, slo));
        }
        let use_slo = cost.seconds(1.0) < slo;
        let Some(mut n) = self.smallest_feasible(&cost, lambda, use_slo, c.target_utilization)
        else {
            // Not even the search limit suffices: ask for the capacity estimate,
            // which the engine's max_replicas bounds.
            let per_replica = f64::from(c.concurrency) * f64::from(c.max_batch_size)
                / cost.seconds(f64::from(c.max_batch_size));
            let desired = ceil_count(lambda / (per_replica * c.target_utilization));
            return Recommendation::new(desired, Reason::new("scale").with_values(lambda, slo));
        };
        let mut kind = "scale";
        if n < input.current && c.scale_down_tolerance > 0.0 {
            // Hysteresis: scale down only to a count that would still meet a
            // stricter utilisation target.
            let strict = c.target_utilization * (1.0 - c.scale_down_tolerance);
            let n_down = self
                .smallest_feasible(&cost, lambda, use_slo, strict)
                .unwrap_or(input.current);
            if n_down >= input.current {
                kind = "within_tolerance";
            }
            n = n.max(n_down).min(input.current);
        }
        let lo = n;
        let slots = f64::from(lo) * f64::from(c.concurrency);
        let predicted = self
            .predicted_latency(&cost, lambda / slots)
            .unwrap_or(f64::INFINITY);
        Recommendation::new(lo, Reason::new(kind).with_values(predicted, slo))
    }
}
