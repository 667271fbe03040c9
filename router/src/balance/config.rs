use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};

/// How replica load is estimated.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoadMetric {
    /// Peak exponentially weighted moving average of latency (linkerd's choice).
    PeakEwma {
        /// Latency assumed for a replica with no measurement yet (the RTT floor).
        default_rtt: Duration,
        /// Time over which an observed peak decays.
        decay: Duration,
    },
    /// Number of requests in flight on the replica.
    PendingRequests,
}

impl Default for LoadMetric {
    fn default() -> Self {
        Self::PeakEwma {
            default_rtt: Duration::from_millis(30),
            decay: Duration::from_secs(10),
        }
    }
}

/// Balancer settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct BalanceConfig {
    /// Load estimate used by the power-of-two-choices pick.
    pub load: LoadMetric,
    /// How long a request may wait for any replica to become ready before
    /// it fails with [`NoReadyReplica`](super::NoReadyReplica).
    pub ready_timeout: Duration,
    /// Requests queued in front of the balancer's worker (backpressure beyond).
    pub buffer_capacity: usize,
}

impl Default for BalanceConfig {
    fn default() -> Self {
        Self {
            load: LoadMetric::default(),
            ready_timeout: Duration::from_secs(5),
            buffer_capacity: 1024,
        }
    }
}

impl BalanceConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        let zero = |what: &str| {
            Err(ConfigError::new(
                ConfigErrorKind::Zero,
                format!("{what} must be positive"),
            ))
        };
        if self.ready_timeout.is_zero() {
            return zero("ready_timeout");
        }
        if self.buffer_capacity == 0 {
            return zero("buffer_capacity");
        }
        if self.buffer_capacity > tokio::sync::Semaphore::MAX_PERMITS {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                format!("buffer_capacity {} is too large", self.buffer_capacity),
            ));
        }
        if let LoadMetric::PeakEwma { default_rtt, decay } = self.load {
            if decay.is_zero() {
                return zero("decay");
            }
            let _ = default_rtt;
        }
        Ok(())
    }
}
