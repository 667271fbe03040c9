use std::time::Duration;

use crate::error::ConfigError;

/// Ejection and probing settings of a [`Pool`](super::Pool).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// Consecutive failed calls that eject an endpoint.
    pub eject_after: u32,
    /// How often every ready endpoint (ejected or not) is probed.
    pub probe_interval: Duration,
    /// Bound on one probe; a probe that takes longer failed.
    pub probe_timeout: Duration,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            eject_after: 5,
            probe_interval: Duration::from_secs(1),
            probe_timeout: Duration::from_millis(500),
        }
    }
}

impl PoolConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.eject_after == 0 {
            return Err(ConfigError::new("eject_after", "must be at least 1"));
        }
        if self.probe_interval.is_zero() {
            return Err(ConfigError::new("probe_interval", "must be positive"));
        }
        if self.probe_timeout.is_zero() {
            return Err(ConfigError::new("probe_timeout", "must be positive"));
        }
        Ok(())
    }
}
