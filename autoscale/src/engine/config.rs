use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{non_zero, ConfigError, ConfigErrorKind};

/// Guard rails the [`Engine`](crate::Engine) applies to any policy.
///
/// Defaults follow Ray Serve where it has the knob (bounds, delays), Kubernetes
/// HPA or Knative where noted; every rail can be turned off.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct EngineConfig {
    /// Name used as the `deployment` label of the metrics. Default `"default"`.
    pub name: String,
    /// Lower bound. Default `1` (Ray `min_replicas`). `0` enables scale to zero.
    pub min_replicas: u32,
    /// Upper bound. Default `10` (Ray's default is 1, HPA requires a value). ≥ `min_replicas`, ≥ 1.
    pub max_replicas: u32,
    /// Replicas to start with; `None` means `min_replicas` (Ray `initial_replicas`).
    /// Must lie within the bounds.
    pub initial_replicas: Option<u32>,
    /// How often the driver evaluates the policy. Default 1 s (Ray's control
    /// loop runs every 0.1 s, HPA every 15 s, KPA every 2 s). Must be > 0.
    /// Step limits apply per evaluation.
    pub interval: Duration,
    /// A scale-up happens only after the policy has asked for more replicas
    /// continuously for this long. Default 30 s (Ray `upscale_delay_s`; measured
    /// in time, not in ticks). Use zero for KPA and HPA, which have their own hysteresis.
    pub upscale_delay: Duration,
    /// A scale-down happens only after the policy has asked for fewer replicas
    /// continuously for this long. Default 600 s (Ray `downscale_delay_s`).
    pub downscale_delay: Duration,
    /// The last step from 1 replica to 0 happens only after the policy has asked
    /// for zero continuously for this long; `None` uses `downscale_delay`
    /// (Ray `downscale_to_zero_delay_s`; Knative's scale-to-zero grace period is 30 s).
    pub scale_to_zero_delay: Option<Duration>,
    /// Scale-down stabilization: never go below the highest recommendation of
    /// this recent window. Default zero (off; Kubernetes HPA uses 300 s).
    pub downscale_stabilization: Duration,
    /// At most this many replicas added per evaluation. Default `None` (unbounded).
    pub max_step_up: Option<u32>,
    /// At most this many replicas removed per evaluation. Default `None` (unbounded).
    pub max_step_down: Option<u32>,
    /// Cold-start awareness: do not scale down while replicas are starting
    /// (their start-up would be wasted and they are not capacity yet), unless
    /// they have been starting for longer than [`cold_start_timeout`](Self::cold_start_timeout).
    /// Default `true`.
    pub hold_down_while_starting: bool,
    /// How long starting replicas may block scale-down. Default 300 s.
    pub cold_start_timeout: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self {
            name: "default".to_owned(),
            min_replicas: 1,
            max_replicas: 10,
            initial_replicas: None,
            interval: Duration::from_secs(1),
            upscale_delay: Duration::from_secs(30),
            downscale_delay: Duration::from_secs(600),
            scale_to_zero_delay: None,
            downscale_stabilization: Duration::ZERO,
            max_step_up: None,
            max_step_down: None,
            hold_down_while_starting: true,
            cold_start_timeout: Duration::from_secs(300),
        }
    }
}

macro_rules! setter {
    ($(#[$doc:meta] $name:ident: $ty:ty),* $(,)?) => {
        $(
            #[$doc]
            pub fn $name(mut self, v: $ty) -> Self {
                self.$name = v;
                self
            }
        )*
    };
}

impl EngineConfig {
    setter! {
        /// Sets [`min_replicas`](Self::min_replicas).
        min_replicas: u32,
        /// Sets [`max_replicas`](Self::max_replicas).
        max_replicas: u32,
        /// Sets [`initial_replicas`](Self::initial_replicas).
        initial_replicas: Option<u32>,
        /// Sets [`interval`](Self::interval).
        interval: Duration,
        /// Sets [`upscale_delay`](Self::upscale_delay).
        upscale_delay: Duration,
        /// Sets [`downscale_delay`](Self::downscale_delay).
        downscale_delay: Duration,
        /// Sets [`scale_to_zero_delay`](Self::scale_to_zero_delay).
        scale_to_zero_delay: Option<Duration>,
        /// Sets [`downscale_stabilization`](Self::downscale_stabilization).
        downscale_stabilization: Duration,
        /// Sets [`max_step_up`](Self::max_step_up).
        max_step_up: Option<u32>,
        /// Sets [`max_step_down`](Self::max_step_down).
        max_step_down: Option<u32>,
        /// Sets [`hold_down_while_starting`](Self::hold_down_while_starting).
        hold_down_while_starting: bool,
        /// Sets [`cold_start_timeout`](Self::cold_start_timeout).
        cold_start_timeout: Duration,
    }

    /// Sets [`name`](Self::name).
    pub fn name(mut self, v: impl Into<String>) -> Self {
        self.name = v.into();
        self
    }

    /// Sets both delays to zero (for policies with their own hysteresis, such as KPA and HPA).
    pub fn no_delays(mut self) -> Self {
        self.upscale_delay = Duration::ZERO;
        self.downscale_delay = Duration::ZERO;
        self
    }

    /// The initial replica count (`initial_replicas` or `min_replicas`).
    pub fn initial(&self) -> u32 {
        self.initial_replicas.unwrap_or(self.min_replicas)
    }

    /// The effective scale-to-zero delay.
    pub fn effective_scale_to_zero_delay(&self) -> Duration {
        self.scale_to_zero_delay.unwrap_or(self.downscale_delay)
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_replicas == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidBounds,
                "max_replicas",
                "must be at least 1",
            ));
        }
        if self.min_replicas > self.max_replicas {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidBounds,
                "min_replicas",
                format!(
                    "min_replicas ({}) > max_replicas ({})",
                    self.min_replicas, self.max_replicas
                ),
            ));
        }
        if let Some(init) = self.initial_replicas {
            if init < self.min_replicas || init > self.max_replicas {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidBounds,
                    "initial_replicas",
                    format!(
                        "{init} is outside [{}, {}]",
                        self.min_replicas, self.max_replicas
                    ),
                ));
            }
        }
        non_zero("interval", self.interval)?;
        for (field, step) in [
            ("max_step_up", self.max_step_up),
            ("max_step_down", self.max_step_down),
        ] {
            if step == Some(0) {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidNumber,
                    field,
                    "must be at least 1 (use None for unbounded)",
                ));
            }
        }
        Ok(())
    }
}
