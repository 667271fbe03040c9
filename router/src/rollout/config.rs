use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};

/// Longest accepted duration: keeps deadline arithmetic far from overflow.
const MAX_DURATION: Duration = Duration::from_secs(365 * 24 * 3600);

/// Latency bound a canary must meet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LatencyLimit {
    /// The canary's quantile must be at most this.
    Absolute(Duration),
    /// The canary's quantile must be at most the stable's quantile (measured
    /// since the rollout started) times this factor.
    StableFactor(f64),
}

/// Latency analysis of a step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct LatencyCheck {
    /// Quantile checked, e.g. `0.99`.
    pub quantile: f64,
    /// Bound on the canary's latency at that quantile.
    pub limit: LatencyLimit,
}

/// Settings of a progressive rollout of `canary` next to `stable`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct RolloutConfig {
    /// Backend currently serving (gets `100 - p` percent).
    pub stable: String,
    /// Backend being rolled out (gets `p` percent).
    pub canary: String,
    /// Canary percentages, strictly increasing, each in `(0, 100]`.
    /// After the last step passes, the canary is promoted to 100 %.
    pub steps: Vec<f64>,
    /// Least time spent on each step before it may pass.
    pub min_step_duration: Duration,
    /// How often the step is analysed.
    pub analysis_interval: Duration,
    /// Completed canary requests needed in the analysis window before any
    /// verdict; below it the rollout waits (it never passes on no data).
    pub min_samples: u64,
    /// Highest acceptable canary error rate, `0.0..=1.0`.
    pub max_error_rate: f64,
    /// Optional latency check.
    pub latency: Option<LatencyCheck>,
    /// Failed analyses (over the whole rollout) that trigger the rollback.
    pub failure_limit: u32,
    /// The rollback lowers the canary to 0 % in this many equal steps.
    pub rollback_steps: u32,
    /// Time between rollback steps.
    pub rollback_interval: Duration,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            stable: "stable".to_owned(),
            canary: "canary".to_owned(),
            steps: vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0],
            min_step_duration: Duration::from_secs(60),
            analysis_interval: Duration::from_secs(10),
            min_samples: 100,
            max_error_rate: 0.01,
            latency: Some(LatencyCheck {
                quantile: 0.99,
                limit: LatencyLimit::StableFactor(1.5),
            }),
            failure_limit: 3,
            rollback_steps: 4,
            rollback_interval: Duration::from_secs(10),
        }
    }
}

impl RolloutConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let range = |msg: String| Err(ConfigError::new(ConfigErrorKind::OutOfRange, msg));
        let zero = |what: &str| {
            Err(ConfigError::new(
                ConfigErrorKind::Zero,
                format!("rollout {what} must be positive"),
            ))
        };
        if self.stable == self.canary {
            return Err(ConfigError::new(
                ConfigErrorKind::DuplicateBackend,
                "stable and canary must be different backends",
            ));
        }
        if self.steps.is_empty() {
            return zero("steps");
        }
        let mut prev = 0.0;
        for s in &self.steps {
            if !(*s > prev && *s <= 100.0) {
                return range(format!(
                    "rollout steps must increase strictly within (0, 100]: {:?}",
                    self.steps
                ));
            }
            prev = *s;
        }
        for (what, d) in [
            ("min_step_duration", self.min_step_duration),
            ("analysis_interval", self.analysis_interval),
            ("rollback_interval", self.rollback_interval),
        ] {
            if d > MAX_DURATION {
                return range(format!("rollout {what} {d:?} exceeds a year"));
            }
        }
        if self.min_step_duration.is_zero() {
            return zero("min_step_duration");
        }
        if self.analysis_interval.is_zero() {
            return zero("analysis_interval");
        }
        if self.rollback_steps == 0 {
            return zero("rollback_steps");
        }
        if self.failure_limit == 0 {
            return zero("failure_limit");
        }
        if self.min_samples == 0 {
            return zero("min_samples");
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return range(format!(
                "max_error_rate {} is not in 0..=1",
                self.max_error_rate
            ));
        }
        if let Some(l) = &self.latency {
            if !(0.0..=1.0).contains(&l.quantile) {
                return range(format!("latency quantile {} is not in 0..=1", l.quantile));
            }
            if let LatencyLimit::StableFactor(f) = l.limit {
                if !(f.is_finite() && f > 0.0) {
                    return range(format!("latency factor {f} must be finite and > 0"));
                }
            }
        }
        Ok(())
    }
}
