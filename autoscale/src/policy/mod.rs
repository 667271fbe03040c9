//! Scaling policies: pure decisions from a window of load signals.
//!
//! A [`Policy`] looks at the [`PolicyInput`] (time, current and ready
//! replicas, the signal [`Window`]) and recommends a replica count with a
//! [`Reason`]. It does not apply bounds, delays or rate limits: the
//! [`Engine`](crate::Engine) does. Policies may keep state between calls
//! (Knative's panic mode, HPA's stabilization), which is why `decide` takes
//! `&mut self`; they never read a clock, so the simulator can drive them.
//!
//! Built-ins reproduce the published algorithms:
//! [`TargetOngoing`] (Ray Serve), [`Hpa`] (Kubernetes HPA), [`Kpa`] (Knative
//! KPA); and add [`LatencySlo`] (latency feedback) and [`QueueModel`]
//! (batching-aware queueing model). [`Max`] and [`Min`] combine policies.

mod adaptive;
mod combinator;
mod cost_memory;
mod hpa;
mod kpa;
mod latency_slo;
mod queue_model;
mod target_ongoing;

use std::fmt;
use std::time::Duration;

use crate::signal::Window;

pub use self::adaptive::{Adaptive, AdaptiveConfig};
pub use self::combinator::{Max, Min};
pub use self::hpa::{
    Hpa, HpaConfig, HpaRule, HpaRuleKind, HpaScalingRules, HpaTarget, SelectPolicy,
};
pub use self::kpa::{Kpa, KpaConfig, KpaMetric};
pub use self::latency_slo::{LatencySlo, LatencySloConfig};
pub use self::queue_model::{QueueModel, QueueModelConfig};
pub use self::target_ongoing::{TargetOngoing, TargetOngoingConfig};

/// Decides how many replicas a deployment should have.
///
/// Implementations must be deterministic functions of their state and the
/// input (no clock, no randomness) and must never panic: missing or odd data
/// yields "hold" (`desired = input.current`), never a jump to the maximum.
pub trait Policy: Send + fmt::Debug {
    /// A short name for logs and metrics, such as `"target_ongoing"`.
    fn name(&self) -> &str;

    /// Recommends a replica count for this instant.
    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation;

    /// How much signal history the policy reads (its longest look-back).
    /// The engine keeps at least this much in its [`Window`].
    fn horizon(&self) -> Duration {
        Duration::from_secs(60)
    }
}

impl<P: Policy + ?Sized> Policy for Box<P> {
    fn name(&self) -> &str {
        (**self).name()
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        (**self).decide(input)
    }

    fn horizon(&self) -> Duration {
        (**self).horizon()
    }
}

/// What a policy sees when it decides.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct PolicyInput<'a> {
    /// The decision time (a duration since the engine's epoch).
    pub now: Duration,
    /// Replicas that exist, including those still starting.
    pub current: u32,
    /// Replicas that are ready to serve (`ready <= current`). Starting replicas
    /// are not capacity until ready.
    pub ready: u32,
    /// Recent load samples.
    pub window: &'a Window,
    /// The engine's lower bound (policies need not apply it).
    pub min_replicas: u32,
    /// The engine's upper bound (policies need not apply it).
    pub max_replicas: u32,
}

impl<'a> PolicyInput<'a> {
    /// An input with no bounds (`0..=u32::MAX`). `ready` is capped at `current`.
    pub fn new(now: Duration, current: u32, ready: u32, window: &'a Window) -> Self {
        Self {
            now,
            current,
            ready: ready.min(current),
            window,
            min_replicas: 0,
            max_replicas: u32::MAX,
        }
    }

    /// Sets the engine bounds.
    pub fn with_bounds(mut self, min_replicas: u32, max_replicas: u32) -> Self {
        self.min_replicas = min_replicas;
        self.max_replicas = max_replicas;
        self
    }

    /// Replicas started but not ready yet.
    pub fn starting(&self) -> u32 {
        self.current.saturating_sub(self.ready)
    }

    /// A "hold at current" recommendation with the given reason kind.
    pub fn hold(&self, kind: &'static str) -> Recommendation {
        Recommendation::new(self.current, Reason::new(kind))
    }
}

/// A policy's output: a replica count and why.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Recommendation {
    /// The recommended number of replicas (before the engine's bounds, delays and limits).
    pub desired: u32,
    /// Why.
    pub reason: Reason,
}

impl Recommendation {
    /// Creates a recommendation.
    pub fn new(desired: u32, reason: Reason) -> Self {
        Self { desired, reason }
    }
}

/// Why a replica count was chosen: a stable machine-readable `kind` (used as a
/// metrics label) plus the observed value and the target it was compared to.
///
/// Kinds used by the built-ins: `"scale"` (the algorithm's formula applied),
/// `"within_tolerance"`, `"no_metrics"`, `"scale_from_zero"`, `"panic"`,
/// `"slo_violation"`, `"saturated"`, `"slo_comfortable"`, `"within_slo"`, `"cold_start"`,
/// `"no_cost_model"`, `"idle"`; and from the engine: `"initial"`,
/// `"min_replicas"`, `"max_replicas"`, `"upscale_delay"`, `"downscale_delay"`,
/// `"scale_to_zero_delay"`, `"stabilized"`, `"step_limit"`, `"cold_start_hold"`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Reason {
    kind: &'static str,
    observed: Option<f64>,
    target: Option<f64>,
}

impl Reason {
    /// A reason of the given kind, with no values.
    pub const fn new(kind: &'static str) -> Self {
        Self {
            kind,
            observed: None,
            target: None,
        }
    }

    /// Attaches the observed metric value and the target it was compared to.
    pub fn with_values(mut self, observed: f64, target: f64) -> Self {
        self.observed = Some(observed);
        self.target = Some(target);
        self
    }

    /// The machine-readable kind, such as `"scale"` or `"no_metrics"`.
    pub fn kind(&self) -> &'static str {
        self.kind
    }

    /// The observed metric value, if any.
    pub fn observed(&self) -> Option<f64> {
        self.observed
    }

    /// The target value, if any.
    pub fn target(&self) -> Option<f64> {
        self.target
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind)?;
        match (self.observed, self.target) {
            (Some(o), Some(t)) => write!(f, " (observed {o:.3}, target {t:.3})"),
            (Some(o), None) => write!(f, " (observed {o:.3})"),
            _ => Ok(()),
        }
    }
}

/// `ceil(x)` as a replica count: NaN and negatives give 0, huge values saturate.
pub(crate) fn ceil_count(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x.ceil() as u32
    }
}

/// `floor(x)` as a replica count, like [`ceil_count`].
pub(crate) fn floor_count(x: f64) -> u32 {
    if x.is_nan() || x <= 0.0 {
        0
    } else if x >= f64::from(u32::MAX) {
        u32::MAX
    } else {
        x.floor() as u32
    }
}

#[cfg(test)]
mod tests;
