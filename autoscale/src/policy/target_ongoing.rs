use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ceil_count, Policy, PolicyInput, Reason, Recommendation};
use crate::error::{non_zero, positive, ConfigError};
use crate::signal::Signal;

/// Configuration of [`TargetOngoing`], mirroring Ray Serve's `autoscaling_config`.
///
/// Ray's `upscale_delay_s` (30 s), `downscale_delay_s` (600 s),
/// `min_replicas`, `max_replicas` and `initial_replicas` live in
/// [`EngineConfig`](crate::EngineConfig), which applies them to any policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct TargetOngoingConfig {
    /// Ongoing requests (queued + running) wanted per replica. Default `2.0`
    /// (Ray Serve `target_ongoing_requests`). Must be finite and > 0.
    pub target_ongoing_requests: f64,
    /// Multiplies the error when scaling up. Default `1.0` (Ray
    /// `upscaling_factor`, falling back to `smoothing_factor` = 1.0). Must be > 0.
    pub upscaling_factor: f64,
    /// Multiplies the error when scaling down. Default `1.0` (Ray
    /// `downscaling_factor`). Must be > 0.
    pub downscaling_factor: f64,
    /// The ongoing-requests average is taken over this look-back. Default 30 s
    /// (Ray `look_back_period_s`). Must be > 0.
    pub look_back: Duration,
}

impl Default for TargetOngoingConfig {
    fn default() -> Self {
        Self {
            target_ongoing_requests: 2.0,
            upscaling_factor: 1.0,
            downscaling_factor: 1.0,
            look_back: Duration::from_secs(30),
        }
    }
}

impl TargetOngoingConfig {
    /// Sets [`target_ongoing_requests`](Self::target_ongoing_requests).
    pub fn target_ongoing_requests(mut self, v: f64) -> Self {
        self.target_ongoing_requests = v;
        self
    }

    /// Sets [`upscaling_factor`](Self::upscaling_factor).
    pub fn upscaling_factor(mut self, v: f64) -> Self {
        self.upscaling_factor = v;
        self
    }

    /// Sets [`downscaling_factor`](Self::downscaling_factor).
    pub fn downscaling_factor(mut self, v: f64) -> Self {
        self.downscaling_factor = v;
        self
    }

    /// Sets [`look_back`](Self::look_back).
    pub fn look_back(mut self, v: Duration) -> Self {
        self.look_back = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        positive("target_ongoing_requests", self.target_ongoing_requests)?;
        positive("upscaling_factor", self.upscaling_factor)?;
        positive("downscaling_factor", self.downscaling_factor)?;
        non_zero("look_back", self.look_back)
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<TargetOngoing, ConfigError> {
        TargetOngoing::new(self)
    }
}

/// Ray Serve's default policy: keep `target_ongoing_requests` per replica.
///
/// With `total` the mean ongoing requests (queued + running) over the
/// look-back and `cur` the running replicas:
/// `desired = ceil(cur + factor · (total / target − cur))`, with the upscaling
/// factor when `total / target ≥ cur` and the downscaling factor otherwise; if
/// the load is zero and the formula would keep `cur`, it removes one replica
/// (Ray's guarantee that an idle deployment shrinks). From zero replicas, any
/// load gives `max(1, ceil(total / target))` at once.
///
/// `cur` is the ready replica count when any replica is ready (Ray counts
/// RUNNING replicas), else the current count. Missing metrics hold; when
/// fewer replicas report than are ready
/// ([`LoadSample::replicas_reporting`](crate::LoadSample::replicas_reporting))
/// and the formula scales down, the silent ones count at the target (HPA's
/// missing-metric rule).
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale::{LoadSample, Policy, PolicyInput, TargetOngoing, TargetOngoingConfig, Window};
///
/// let mut policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
/// let mut window = Window::new(Duration::from_secs(60));
/// window.push(Duration::from_secs(1), LoadSample::ongoing(10.0));
/// let rec = policy.decide(&PolicyInput::new(Duration::from_secs(1), 2, 2, &window));
/// assert_eq!(rec.desired, 5); // target 2, 10 ongoing on 2 replicas
/// ```
#[derive(Debug, Clone)]
pub struct TargetOngoing {
    config: TargetOngoingConfig,
}

impl TargetOngoing {
    /// Validates `config` and builds the policy.
    pub fn new(config: TargetOngoingConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &TargetOngoingConfig {
        &self.config
    }
}

impl TargetOngoing {
    /// Ray's formula for `cur > 0` running replicas.
    fn formula(c: &TargetOngoingConfig, total: f64, cur: u32) -> u32 {
        let cur_f = f64::from(cur);
        let error_ratio = total / (c.target_ongoing_requests * cur_f);
        let factor = if error_ratio >= 1.0 {
            c.upscaling_factor
        } else {
            c.downscaling_factor
        };
        let smoothed = 1.0 + (error_ratio - 1.0) * factor;
        let desired = ceil_count(cur_f * smoothed);
        if error_ratio == 0.0 && desired == cur && desired >= 1 {
            desired - 1
        } else {
            desired
        }
    }
}

impl Policy for TargetOngoing {
    fn name(&self) -> &str {
        "target_ongoing"
    }

    fn horizon(&self) -> Duration {
        self.config.look_back
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let c = &self.config;
        let Some(total) = input.window.mean(input.now, c.look_back, Signal::Ongoing) else {
            return input.hold("no_metrics");
        };
        let target = c.target_ongoing_requests;
        let cur = if input.ready > 0 {
            input.ready
        } else {
            input.current
        };
        if cur == 0 {
            let desired = if total > 0.0 {
                ceil_count(total / target).max(1)
            } else {
                0
            };
            return Recommendation::new(
                desired,
                Reason::new("scale_from_zero").with_values(total, target),
            );
        }
        let cur_f = f64::from(cur);
        let mut desired = Self::formula(c, total, cur);
        // Replicas that stopped reporting: when the others suggest scaling
        // down, assume the silent ones carry the target load (HPA's rule),
        // so a reporting gap never looks like idleness.
        let view = input.window.view(input.now, c.look_back);
        if let Some(reporting) = view.replicas_reporting() {
            let missing = cur.saturating_sub(reporting);
            if missing > 0 && desired < cur {
                let padded = total + f64::from(missing) * target;
                desired = desired.max(Self::formula(c, padded, cur)).min(cur);
            }
        }
        let per_replica = total / cur_f;
        Recommendation::new(
            desired,
            Reason::new("scale").with_values(per_replica, target),
        )
    }
}
