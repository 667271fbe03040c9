//! `[deployment.rollout]` and its `[deployment.rollout.drift]`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::de::{
    fraction, positive_duration, positive_u32, positive_u64, positive_usize, rate, ser_duration,
    some_cosine, some_non_negative, some_positive_duration, some_positive_f64, some_rate, steps,
};

/// `[deployment.rollout]`: traffic moves from the stable version to the
/// canary through `steps` (percent), each held at least `step`, promoted
/// while the canary's errors, latency (and, with `[deployment.rollout.drift]`,
/// its predictions) stay in bounds, rolled back otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawRolloutPlan")]
pub struct RolloutPlan {
    /// Canary percentages, ascending, each in (0, 100].
    pub steps: Vec<f64>,
    /// Least time at each step.
    #[serde(serialize_with = "ser_duration")]
    pub step: Duration,
    /// How often the step is analysed (default: a fifth of `step`).
    #[serde(serialize_with = "ser_duration")]
    pub analysis_interval: Duration,
    /// Canary requests (and drift pairs) needed before any verdict.
    pub min_samples: u64,
    /// Highest canary error rate that passes, in [0, 1].
    pub max_error_rate: f64,
    /// The canary's p99 latency bound.
    pub latency: P99Limit,
    /// Failed analyses that start the rollback.
    pub failure_limit: u32,
    /// The rollback lowers the canary to 0 in this many steps...
    pub rollback_steps: u32,
    /// ...this far apart (default: half of `step`).
    #[serde(serialize_with = "ser_duration")]
    pub rollback_interval: Duration,
    /// The prediction-drift check, if any.
    pub drift: Option<DriftPlan>,
}

/// The canary's p99 latency bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum P99Limit {
    /// At most this (`max_p99 = "250ms"`).
    Absolute(#[serde(serialize_with = "ser_duration")] Duration),
    /// At most the stable's p99 times this (`max_p99_factor = 2.0`, the default).
    StableFactor(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRolloutPlan {
    #[serde(deserialize_with = "steps")]
    steps: Vec<f64>,
    #[serde(
        alias = "step_duration",
        deserialize_with = "positive_duration",
        default = "thirty_seconds"
    )]
    step: Duration,
    #[serde(default, deserialize_with = "some_positive_duration")]
    analysis_interval: Option<Duration>,
    #[serde(default = "fifty", deserialize_with = "positive_u64")]
    min_samples: u64,
    #[serde(default = "one_percent", deserialize_with = "rate")]
    max_error_rate: f64,
    #[serde(default, deserialize_with = "some_positive_duration")]
    max_p99: Option<Duration>,
    #[serde(default, deserialize_with = "some_positive_f64")]
    max_p99_factor: Option<f64>,
    #[serde(default = "three", deserialize_with = "positive_u32")]
    failure_limit: u32,
    #[serde(default = "four", deserialize_with = "positive_u32")]
    rollback_steps: u32,
    #[serde(default, deserialize_with = "some_positive_duration")]
    rollback_interval: Option<Duration>,
    #[serde(default)]
    drift: Option<DriftPlan>,
}

impl TryFrom<RawRolloutPlan> for RolloutPlan {
    type Error = String;

    fn try_from(raw: RawRolloutPlan) -> Result<Self, String> {
        let latency = match (raw.max_p99, raw.max_p99_factor) {
            (Some(_), Some(_)) => {
                return Err("rollout: set max_p99 or max_p99_factor, not both".into())
            }
            (Some(d), None) => P99Limit::Absolute(d),
            (None, f) => P99Limit::StableFactor(f.unwrap_or(2.0)),
        };
        let floor = Duration::from_millis(1);
        Ok(Self {
            steps: raw.steps,
            step: raw.step,
            analysis_interval: raw.analysis_interval.unwrap_or((raw.step / 5).max(floor)),
            min_samples: raw.min_samples,
            max_error_rate: raw.max_error_rate,
            latency,
            failure_limit: raw.failure_limit,
            rollback_steps: raw.rollback_steps,
            rollback_interval: raw.rollback_interval.unwrap_or((raw.step / 2).max(floor)),
            drift: raw.drift,
        })
    }
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn fifty() -> u64 {
    50
}

fn one_percent() -> f64 {
    0.01
}

fn three() -> u32 {
    3
}

fn four() -> u32 {
    4
}

/// `[deployment.rollout.drift]`: while a canary runs, a share of its
/// requests is also sent to the stable version (off the request path) and
/// the two answers are compared: top-1 agreement for classifiers, cosine
/// of the outputs for encoders, KS and PSI on the top class's probability.
/// Each check is on when its threshold is set; at least one must be.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawDriftPlan")]
pub struct DriftPlan {
    /// Pairs needed per check before a verdict.
    pub min_pairs: u64,
    /// Lowest share of pairs with the same top class, in [0, 1].
    pub min_top1_agreement: Option<f64>,
    /// Lowest mean cosine of the two outputs, in [-1, 1].
    pub min_cosine: Option<f64>,
    /// Highest Kolmogorov–Smirnov D of the top-class probabilities, in [0, 1].
    pub max_ks: Option<f64>,
    /// Highest population stability index of the same, ≥ 0.
    pub max_psi: Option<f64>,
    /// Share of the canary's requests mirrored to the stable version, in (0, 1].
    pub mirror_fraction: f64,
    /// Mirrored requests in flight at most (more are skipped, never queued).
    pub max_mirrored: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriftPlan {
    #[serde(default = "hundred_pairs", deserialize_with = "positive_u64")]
    min_pairs: u64,
    #[serde(default, deserialize_with = "some_rate")]
    min_top1_agreement: Option<f64>,
    #[serde(default, deserialize_with = "some_cosine")]
    min_cosine: Option<f64>,
    #[serde(default, deserialize_with = "some_rate")]
    max_ks: Option<f64>,
    #[serde(default, deserialize_with = "some_non_negative")]
    max_psi: Option<f64>,
    #[serde(default = "one", deserialize_with = "fraction")]
    mirror_fraction: f64,
    #[serde(default = "sixty_four", deserialize_with = "positive_usize")]
    max_mirrored: usize,
}

impl TryFrom<RawDriftPlan> for DriftPlan {
    type Error = String;

    fn try_from(raw: RawDriftPlan) -> Result<Self, String> {
        if [
            raw.min_top1_agreement,
            raw.min_cosine,
            raw.max_ks,
            raw.max_psi,
        ]
        .iter()
        .all(Option::is_none)
        {
            return Err(
                "rollout.drift: set at least one of min_top1_agreement, min_cosine, max_ks, max_psi"
                    .into(),
            );
        }
        Ok(Self {
            min_pairs: raw.min_pairs,
            min_top1_agreement: raw.min_top1_agreement,
            min_cosine: raw.min_cosine,
            max_ks: raw.max_ks,
            max_psi: raw.max_psi,
            mirror_fraction: raw.mirror_fraction,
            max_mirrored: raw.max_mirrored,
        })
    }
}

fn hundred_pairs() -> u64 {
    100
}

fn one() -> f64 {
    1.0
}

fn sixty_four() -> usize {
    64
}
