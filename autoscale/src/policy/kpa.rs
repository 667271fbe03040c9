use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ceil_count, floor_count, Policy, PolicyInput, Reason, Recommendation};
use crate::error::{non_zero, positive, within, ConfigError, ConfigErrorKind};
use crate::signal::{Counter, Signal};

/// The metric Knative scales on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KpaMetric {
    /// In-flight requests per replica (Knative `concurrency`, the default).
    Concurrency,
    /// Requests per second per replica (Knative `rps`).
    Rps,
}

/// Configuration of [`Kpa`], mirroring Knative Serving's autoscaler config map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct KpaConfig {
    /// The metric. Default [`KpaMetric::Concurrency`] (Knative `autoscaling.knative.dev/metric`).
    pub metric: KpaMetric,
    /// Per-replica target. Default `100.0` (Knative `container-concurrency-target-default`). > 0.
    pub target: f64,
    /// Fraction of the target actually aimed at. Default `0.7` (Knative
    /// `container-concurrency-target-percentage` 70 %). Within `(0, 1]`.
    pub target_utilization: f64,
    /// The stable window. Default 60 s (Knative `stable-window`). > 0.
    pub stable_window: Duration,
    /// The panic window. Default 6 s (Knative `panic-window-percentage` 10 % of
    /// the stable window). > 0 and at most the stable window.
    pub panic_window: Duration,
    /// Panic when the panic-window replica count reaches this multiple of the
    /// ready replicas. Default `2.0` (Knative `panic-threshold-percentage` 200 %). ≥ 1.
    pub panic_threshold: f64,
    /// Scale up by at most this factor of the ready replicas per decision.
    /// Default `1000.0` (Knative `max-scale-up-rate`). ≥ 1.
    pub max_scale_up_rate: f64,
    /// Scale down to no less than ready / this per decision. Default `2.0`
    /// (Knative `max-scale-down-rate`). ≥ 1.
    pub max_scale_down_rate: f64,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            metric: KpaMetric::Concurrency,
            target: 100.0,
            target_utilization: 0.7,
            stable_window: Duration::from_secs(60),
            panic_window: Duration::from_secs(6),
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
        }
    }
}

impl KpaConfig {
    /// Sets [`metric`](Self::metric).
    pub fn metric(mut self, v: KpaMetric) -> Self {
        self.metric = v;
        self
    }

    /// Sets [`target`](Self::target).
    pub fn target(mut self, v: f64) -> Self {
        self.target = v;
        self
    }

    /// Sets [`target_utilization`](Self::target_utilization).
    pub fn target_utilization(mut self, v: f64) -> Self {
        self.target_utilization = v;
        self
    }

    /// Sets [`stable_window`](Self::stable_window).
    pub fn stable_window(mut self, v: Duration) -> Self {
        self.stable_window = v;
        self
    }

    /// Sets [`panic_window`](Self::panic_window).
    pub fn panic_window(mut self, v: Duration) -> Self {
        self.panic_window = v;
        self
    }

    /// Sets [`panic_threshold`](Self::panic_threshold).
    pub fn panic_threshold(mut self, v: f64) -> Self {
        self.panic_threshold = v;
        self
    }

    /// Sets [`max_scale_up_rate`](Self::max_scale_up_rate).
    pub fn max_scale_up_rate(mut self, v: f64) -> Self {
        self.max_scale_up_rate = v;
        self
    }

    /// Sets [`max_scale_down_rate`](Self::max_scale_down_rate).
    pub fn max_scale_down_rate(mut self, v: f64) -> Self {
        self.max_scale_down_rate = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("target", self.target)?;
        within(
            "target_utilization",
            self.target_utilization,
            f64::MIN_POSITIVE,
            1.0,
        )?;
        non_zero("stable_window", self.stable_window)?;
        non_zero("panic_window", self.panic_window)?;
        if self.panic_window > self.stable_window {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidWindow,
                "panic_window",
                "must not exceed stable_window",
            ));
        }
        within("panic_threshold", self.panic_threshold, 1.0, f64::MAX)?;
        within("max_scale_up_rate", self.max_scale_up_rate, 1.0, f64::MAX)?;
        within(
            "max_scale_down_rate",
            self.max_scale_down_rate,
            1.0,
            f64::MAX,
        )
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<Kpa, ConfigError> {
        Kpa::new(self)
    }
}

/// Knative's KPA with stable and panic modes, as upstream
/// `pkg/autoscaler/scaling/autoscaler.go` decides.
///
/// Every decision computes, with `t = target · target_utilization` and
/// `ready = max(1, ready replicas)`:
/// `stable = ceil(mean over stable window / t)` and
/// `panic = ceil(mean over panic window / t)`, each clamped to
/// `[floor(ready / max_scale_down_rate), ceil(ready · max_scale_up_rate)]`.
/// Panic mode starts when `panic / ready ≥ panic_threshold`, is extended while
/// that holds, and ends at the first decision, without that condition, more
/// than a full stable window after the last one with it. While panicking the
/// recommendation is `max(stable, panic)` ratcheted over the panic episode:
/// it never goes down within the episode, and the ratchet starts afresh with
/// the next one. Replicas still starting do not count (Knative sees ready
/// pods only). Otherwise it is the stable count.
///
/// Like a freshly started Knative autoscaler, the first decision starts in
/// panic mode, holding the ready count, when more than one replica is
/// ready: with no history yet it keeps the current scale rather than
/// scaling down on a partial window. The engine should run it with no
/// delays ([`EngineConfig::no_delays`](crate::EngineConfig::no_delays)),
/// without [`hold_down_while_starting`](crate::EngineConfig::hold_down_while_starting)
/// (Knative has no such rule) and at a 2 s interval (Knative's tick).
/// No data in the stable window holds.
#[derive(Debug, Clone)]
pub struct Kpa {
    config: KpaConfig,
    panic_since: Option<Duration>,
    max_panic_pods: u32,
    started: bool,
}

impl Kpa {
    /// Validates `config` and builds the policy.
    pub fn new(config: KpaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            panic_since: None,
            max_panic_pods: 0,
            started: false,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &KpaConfig {
        &self.config
    }

    /// `true` while in panic mode.
    pub fn is_panicking(&self) -> bool {
        self.panic_since.is_some()
    }

    fn observe(&self, input: &PolicyInput<'_>, window: Duration) -> Option<f64> {
        let view = input.window.view(input.now, window);
        match self.config.metric {
            KpaMetric::Concurrency => view.mean(Signal::Ongoing),
            KpaMetric::Rps => view.rate(Counter::Arrivals),
        }
    }
}

impl Policy for Kpa {
    fn name(&self) -> &str {
        "kpa"
    }

    fn horizon(&self) -> Duration {
        self.config.stable_window
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let c = &self.config;
        let now = input.now;
        if !self.started {
            // A new Knative autoscaler starts in panic mode holding the ready
            // count when more than one pod is ready.
            self.started = true;
            if input.ready > 1 {
                self.panic_since = Some(now);
                self.max_panic_pods = input.ready;
            }
        }
        let Some(stable_value) = self.observe(input, c.stable_window) else {
            return input.hold("no_metrics");
        };
        let panic_value = self.observe(input, c.panic_window).unwrap_or(stable_value);
        let target = c.target * c.target_utilization;
        let ready = f64::from(input.ready.max(1));
        let max_up = ceil_count(ready * c.max_scale_up_rate);
        let max_down = floor_count(ready / c.max_scale_down_rate);
        let dspc = ceil_count(stable_value / target);
        let dppc = ceil_count(panic_value / target);
        let stable_pods = dspc.max(max_down).min(max_up);
        let panic_pods = dppc.max(max_down).min(max_up);
        let over_threshold = f64::from(dppc) / ready >= c.panic_threshold;

        if over_threshold {
            // Enter panic mode, or extend it.
            self.panic_since = Some(now);
        } else if let Some(since) = self.panic_since {
            // Strictly after a full stable window, as upstream's
            // `panicTime.Add(StableWindow).Before(now)`.
            if since + c.stable_window < now {
                self.panic_since = None;
                self.max_panic_pods = 0;
            }
        }

        if self.panic_since.is_some() {
            // Provision for the larger of the two windows, and never scale
            // down within the panic episode.
            self.max_panic_pods = self.max_panic_pods.max(stable_pods.max(panic_pods));
            Recommendation::new(
                self.max_panic_pods,
                Reason::new("panic").with_values(panic_value / ready, target),
            )
        } else {
            Recommendation::new(
                stable_pods,
                Reason::new("scale").with_values(stable_value / ready, target),
            )
        }
    }
}
