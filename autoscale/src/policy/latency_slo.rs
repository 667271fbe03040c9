use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ceil_count, floor_count, Policy, PolicyInput, Reason, Recommendation};
use crate::error::{non_zero, positive, within, ConfigError, ConfigErrorKind};
use crate::signal::{Counter, Signal};

/// Configuration of [`LatencySlo`]. No published system has this policy
/// (Ray Serve, HPA and KPA cannot scale on latency directly); the defaults are convoy's.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct LatencySloConfig {
    /// The latency objective for [`quantile`](Self::quantile). Default 100 ms. > 0.
    pub target: Duration,
    /// Which latency to keep under the target: one of the latency signals.
    /// Default [`Signal::LatencyP99`].
    pub quantile: Signal,
    /// Latency is averaged over this look-back. Default 10 s. > 0.
    pub look_back: Duration,
    /// On violation, grow by at most this factor of the ready replicas per
    /// decision. Default `2.0`. ≥ 1.
    pub max_scale_up_factor: f64,
    /// "Comfortably under": scale down only while every sample in the
    /// look-back is below `scale_down_threshold · target`. Default `0.5`. Within `(0, 1)`.
    pub scale_down_threshold: f64,
    /// Remove this fraction of the replicas per decision when comfortable (at
    /// least one). Default `0.1`. Within `(0, 1]`.
    pub scale_down_step: f64,
    /// Optional guard: never scale down if the remaining replicas would carry
    /// more than this many ongoing requests each. Default `None`.
    pub max_ongoing_per_replica: Option<f64>,
    /// The policy learns a replica's capacity (completions per second per
    /// ready replica while saturated: arrivals significantly above completions). Once known, it never
    /// scales below, and on violation scales straight to, the replicas that
    /// carry the arrival rate at this fraction of that capacity. Default `0.7`.
    /// Within `(0, 1]`.
    pub max_utilization: f64,
}

impl Default for LatencySloConfig {
    fn default() -> Self {
        Self {
            target: Duration::from_millis(100),
            quantile: Signal::LatencyP99,
            look_back: Duration::from_secs(10),
            max_scale_up_factor: 2.0,
            scale_down_threshold: 0.5,
            scale_down_step: 0.1,
            max_ongoing_per_replica: None,
            max_utilization: 0.7,
        }
    }
}

impl LatencySloConfig {
    /// Sets [`target`](Self::target).
    pub fn target(mut self, v: Duration) -> Self {
        self.target = v;
        self
    }

    /// Sets [`quantile`](Self::quantile).
    pub fn quantile(mut self, v: Signal) -> Self {
        self.quantile = v;
        self
    }

    /// Sets [`look_back`](Self::look_back).
    pub fn look_back(mut self, v: Duration) -> Self {
        self.look_back = v;
        self
    }

    /// Sets [`max_scale_up_factor`](Self::max_scale_up_factor).
    pub fn max_scale_up_factor(mut self, v: f64) -> Self {
        self.max_scale_up_factor = v;
        self
    }

    /// Sets [`scale_down_threshold`](Self::scale_down_threshold).
    pub fn scale_down_threshold(mut self, v: f64) -> Self {
        self.scale_down_threshold = v;
        self
    }

    /// Sets [`scale_down_step`](Self::scale_down_step).
    pub fn scale_down_step(mut self, v: f64) -> Self {
        self.scale_down_step = v;
        self
    }

    /// Sets [`max_ongoing_per_replica`](Self::max_ongoing_per_replica).
    pub fn max_ongoing_per_replica(mut self, v: Option<f64>) -> Self {
        self.max_ongoing_per_replica = v;
        self
    }

    /// Sets [`max_utilization`](Self::max_utilization).
    pub fn max_utilization(mut self, v: f64) -> Self {
        self.max_utilization = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        non_zero("target", self.target)?;
        non_zero("look_back", self.look_back)?;
        if !matches!(
            self.quantile,
            Signal::LatencyP50 | Signal::LatencyP90 | Signal::LatencyP99 | Signal::QueueWait
        ) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                "quantile",
                "must be a latency signal",
            ));
        }
        within("max_scale_up_factor", self.max_scale_up_factor, 1.0, 1e6)?;
        within(
            "scale_down_threshold",
            self.scale_down_threshold,
            f64::MIN_POSITIVE,
            0.999,
        )?;
        within(
            "scale_down_step",
            self.scale_down_step,
            f64::MIN_POSITIVE,
            1.0,
        )?;
        if let Some(m) = self.max_ongoing_per_replica {
            positive("max_ongoing_per_replica", m)?;
        }
        Ok(())
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<LatencySlo, ConfigError> {
        LatencySlo::new(self)
    }
}

/// Keeps a latency quantile (p99 by default) under a target.
///
/// - **Violation** (look-back mean of the quantile above the target): fast up,
///   `desired = ceil(ready · min(observed / target, max_scale_up_factor))`, at
///   least `ready + 1`, never below current; and when the replicas are
///   saturated (arrival rate above completion rate over the look-back), at
///   least `ceil(ready · arrivals / completions)`, uncapped.
/// - **Saturated** before any violation (arrivals exceed completions over the
///   look-back by more than three Poisson standard deviations: the queue is
///   growing): `ceil(ready · arrivals / completions)`, never below current.
/// - **Comfortable** (every sample of the look-back under
///   `scale_down_threshold · target`, and no replica starting): slow, bounded
///   down by `max(1, floor(current · scale_down_step))` replicas, less if the
///   `max_ongoing_per_replica` guard would be crossed.
/// - Otherwise hold.
///
/// The look-back is also the window of the arrival and completion rates;
/// rates compared per replica (saturation, the shortfall, the learned
/// capacity) only use the part of it since the ready count last changed.
///
/// Anti-windup: the increase is computed from the *ready* replicas, not from
/// the previous recommendation, so a violation that persists while new replicas
/// cold-start does not compound into more and more replicas. No completed
/// requests and no load is idle (scale down a step); no latency data with load
/// holds (or asks for one replica at zero).
#[derive(Debug, Clone)]
pub struct LatencySlo {
    config: LatencySloConfig,
    /// Learned completions per second of one ready replica when saturated.
    capacity: Option<f64>,
    /// The ready count last seen and when it was first seen: completion
    /// rates are only read over samples taken with that many replicas.
    ready_since: Option<(u32, Duration)>,
}

impl LatencySlo {
    /// Validates `config` and builds the policy.
    pub fn new(config: LatencySloConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            capacity: None,
            ready_since: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &LatencySloConfig {
        &self.config
    }

    /// The learned per-replica capacity (completions per second of one ready
    /// replica while saturated), once saturation has been seen.
    pub fn capacity(&self) -> Option<f64> {
        self.capacity
    }

    /// Learns the capacity from a saturated look-back (EWMA, weight 0.3).
    fn learn_capacity(&mut self, view: &crate::signal::WindowView<'_>, ready: u32) {
        if ready == 0 {
            return;
        }
        if let Some(done) = view.rate(Counter::Completions).filter(|d| *d > 0.0) {
            let per_replica = done / f64::from(ready);
            self.capacity = Some(match self.capacity {
                Some(c) => 0.7 * c + 0.3 * per_replica,
                None => per_replica,
            });
        }
    }

    /// Replicas needed for the arrival rate at `max_utilization` of the learned capacity.
    fn needed(&self, view: &crate::signal::WindowView<'_>) -> Option<u32> {
        let capacity = self.capacity?;
        let arrivals = view.rate(Counter::Arrivals)?;
        Some(ceil_count(
            arrivals / (capacity * self.config.max_utilization),
        ))
    }

    fn step_down(
        &self,
        input: &PolicyInput<'_>,
        view: &crate::signal::WindowView<'_>,
        ongoing: f64,
        reason: Reason,
    ) -> Recommendation {
        let c = &self.config;
        let current = input.current;
        if current == 0 {
            return Recommendation::new(0, reason);
        }
        if input.starting() > 0 {
            return input.hold("cold_start");
        }
        let step = floor_count(f64::from(current) * c.scale_down_step).max(1);
        let mut desired = current.saturating_sub(step);
        if let Some(max_per) = c.max_ongoing_per_replica {
            // The fewest replicas that keep the guard.
            let needed = ceil_count(ongoing / max_per);
            desired = desired.max(needed).min(current);
        }
        if let Some(needed) = self.needed(view) {
            // Keep enough learned capacity for the arrival rate.
            desired = desired.max(needed).min(current);
        }
        Recommendation::new(desired, reason)
    }
}

/// `arrivals / completions` over the look-back when arrivals exceed
/// completions (with `significant`, by more than three Poisson standard
/// deviations of the difference); `None` otherwise.
fn shortfall(view: &crate::signal::WindowView<'_>, significant: bool) -> Option<f64> {
    let arrivals = view.rate(Counter::Arrivals)?;
    let completions = view.rate(Counter::Completions)?;
    if completions <= 0.0 || arrivals <= completions {
        return None;
    }
    if significant {
        let secs = view.lookback().as_secs_f64();
        let noise = 3.0 * ((arrivals + completions) / secs).sqrt();
        if arrivals - completions <= noise {
            return None;
        }
    }
    Some(arrivals / completions)
}

impl Policy for LatencySlo {
    fn name(&self) -> &str {
        "latency_slo"
    }

    fn horizon(&self) -> Duration {
        self.config.look_back
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let c = &self.config;
        let view = input.window.view(input.now, c.look_back);
        let target = c.target.as_secs_f64();
        let Some(ongoing) = view.mean(Signal::Ongoing) else {
            return input.hold("no_metrics");
        };
        let (Some(observed), Some(worst)) = (view.mean(c.quantile), view.max(c.quantile)) else {
            if ongoing <= 0.0 {
                return self.step_down(input, &view, ongoing, Reason::new("idle"));
            }
            if input.current == 0 {
                return Recommendation::new(
                    1,
                    Reason::new("scale_from_zero").with_values(ongoing, 0.0),
                );
            }
            return input.hold("no_metrics");
        };
        if input.current == 0 {
            let desired = u32::from(ongoing > 0.0);
            return Recommendation::new(
                desired,
                Reason::new("scale_from_zero").with_values(ongoing, 0.0),
            );
        }
        // Completions per replica only mean something over samples taken
        // while the same replicas were ready: a look-back reaching into a
        // time with fewer replicas would underestimate each one's throughput
        // (and overshoot the replicas asked for).
        let since = match self.ready_since {
            Some((ready, at)) if ready == input.ready => at,
            Some(_) => {
                self.ready_since = Some((input.ready, input.now));
                input.now
            }
            // The first decision: nothing says the count was ever different.
            None => {
                self.ready_since = Some((input.ready, Duration::ZERO));
                Duration::ZERO
            }
        };
        let stable = input
            .window
            .view(input.now, c.look_back.min(input.now.saturating_sub(since)));
        let saturated = shortfall(&stable, true);
        if saturated.is_some() {
            // Only a growing queue shows the replicas at full throughput; a
            // violation alone may come at any load.
            self.learn_capacity(&stable, input.ready);
        }
        let c = &self.config;
        if observed > target {
            let ratio = (observed / target).min(c.max_scale_up_factor);
            let base = input.ready;
            let mut wanted = ceil_count(f64::from(base) * ratio).max(base.saturating_add(1));
            // Saturated replicas complete less than arrives: scale by the
            // shortfall at once, however large.
            if let Some(shortfall) = shortfall(&stable, false) {
                wanted = wanted.max(ceil_count(f64::from(base) * shortfall));
            }
            if let Some(needed) = self.needed(&view) {
                wanted = wanted.max(needed);
            }
            let reason = Reason::new("slo_violation").with_values(observed, target);
            if wanted <= input.current && input.starting() > 0 {
                return Recommendation::new(
                    input.current,
                    Reason::new("cold_start").with_values(observed, target),
                );
            }
            return Recommendation::new(wanted.max(input.current), reason);
        }
        // A leading signal: the queue is growing (significantly more arrivals
        // than completions) before the quantile shows it.
        if let Some(shortfall) = saturated {
            let wanted =
                ceil_count(f64::from(input.ready) * shortfall).max(self.needed(&view).unwrap_or(0));
            if wanted > input.current {
                return Recommendation::new(
                    wanted,
                    Reason::new("saturated").with_values(observed, target),
                );
            }
            return Recommendation::new(
                input.current,
                Reason::new("within_slo").with_values(observed, target),
            );
        }
        if worst < c.scale_down_threshold * target {
            return self.step_down(
                input,
                &view,
                ongoing,
                Reason::new("slo_comfortable").with_values(observed, target),
            );
        }
        Recommendation::new(
            input.current,
            Reason::new("within_slo").with_values(observed, target),
        )
    }
}
