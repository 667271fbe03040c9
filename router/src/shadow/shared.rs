//! The settings of a shadow and the state every service of one
//! [`ShadowLayer`](super::ShadowLayer) shares: the mirror sequence, the
//! in-flight bound and the counters. Below both the layer and the service.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::error::{ConfigError, ConfigErrorKind};

/// Name of the shadow counter; labels `shadow` (the name) and `outcome`
/// (`mirrored`, `dropped`, `completed`, `failed`, `timed_out`).
pub const SHADOW_TOTAL: &str = "convoy_router_shadow_total";

/// Shadow settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowConfig {
    /// Name used as the `shadow` metric label.
    pub name: String,
    /// Fraction of requests mirrored, `0.0..=1.0`; exact over any window
    /// (every `1/fraction`-th request), not random.
    pub fraction: f64,
    /// Most shadow requests in flight; excess mirrors are dropped and counted.
    pub max_in_flight: usize,
    /// A shadow request still running after this is abandoned and counted
    /// as `timed_out`, so a hung shadow cannot hold a permit forever.
    pub timeout: Duration,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            name: "shadow".to_owned(),
            fraction: 1.0,
            max_in_flight: 64,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a shadow layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShadowStats {
    /// Mirrors sent to the shadow.
    pub mirrored: u64,
    /// Mirrors dropped because `max_in_flight` were already running (or no runtime).
    pub dropped: u64,
    /// Shadow requests that completed successfully.
    pub completed: u64,
    /// Shadow requests that failed.
    pub failed: u64,
    /// Shadow requests abandoned after `timeout`.
    pub timed_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) mirrored: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

pub(crate) type Cloner<Req> = Box<dyn Fn(&Req) -> Req + Send + Sync>;

/// State shared by every service made by one layer: the in-flight bound is global.
pub(crate) struct Shared<Req> {
    pub(crate) name: String,
    pub(crate) fraction: f64,
    seq: AtomicU64,
    permits: Arc<Semaphore>,
    pub(crate) timeout: Duration,
    pub(crate) cloner: Cloner<Req>,
    pub(crate) counters: Counters,
}

impl<Req> Shared<Req> {
    /// Validates `config` (invalid settings fail here, never per request).
    pub(crate) fn new(config: ShadowConfig, cloner: Cloner<Req>) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&config.fraction) {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                format!("shadow fraction {} is not in 0..=1", config.fraction),
            ));
        }
        if config.max_in_flight == 0 || config.timeout.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::Zero,
                "shadow max_in_flight and timeout must be positive",
            ));
        }
        let max = config.max_in_flight.min(Semaphore::MAX_PERMITS);
        Ok(Self {
            name: config.name,
            fraction: config.fraction,
            seq: AtomicU64::new(0),
            permits: Arc::new(Semaphore::new(max)),
            timeout: config.timeout,
            cloner,
            counters: Counters::default(),
        })
    }

    /// Decides whether this request is mirrored and reserves its permit.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if self.fraction <= 0.0 {
            return None;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed) as f64;
        if ((n + 1.0) * self.fraction).floor() <= (n * self.fraction).floor() {
            return None;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(p) if tokio::runtime::Handle::try_current().is_ok() => Some(p),
            _ => {
                self.count("dropped", &self.counters.dropped);
                None
            }
        }
    }

    pub(crate) fn count(&self, outcome: &'static str, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(SHADOW_TOTAL, "shadow" => self.name.clone(), "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn stats(&self) -> ShadowStats {
        let c = &self.counters;
        ShadowStats {
            mirrored: c.mirrored.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
        }
    }
}
