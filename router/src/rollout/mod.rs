//! Progressive rollout of a canary next to a stable version.
//!
//! A [`Rollout`] raises the canary's share step by step (1, 5, 10, 25, 50,
//! 100 % by default). Each step lasts at least `min_step_duration`; every
//! `analysis_interval` the canary's requests since the step began are
//! analysed: error rate ≤ `max_error_rate`, optionally a latency
//! quantile ≤ an absolute bound or ≤ the stable's quantile × a factor, and
//! optionally prediction drift: whether the canary answers like the stable
//! version on the same traffic ([`Rollout::drift`], [`drift`] module).
//!
//! * No verdict is given below `min_samples` completed canary requests
//!   (analysis that passes on no data is how bad canaries reach 100 %): the
//!   rollout waits and says so with a [`Waiting`](RolloutEventKind::Waiting)
//!   event.
//! * A failed analysis counts against `failure_limit` and restarts the
//!   analysis window; reaching the limit starts the rollback.
//! * The rollback lowers the canary in `rollback_steps` equal steps,
//!   `rollback_interval` apart (no traffic cliff); an operator abort rolls
//!   back the same way.
//! * The operator can pause, resume, abort and promote through the
//!   [`RolloutHandle`].
//! * Every transition is a [`RolloutEvent`] with a reason, delivered to an
//!   optional callback and to a broadcast channel.
//!
//! The controller runs on tokio time, so it is tested with paused time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use convoy_router::rollout::{Rollout, RolloutConfig, RolloutState};
//! use convoy_router::Split;
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), BoxError> {
//! let backend = service_fn(|x: u32| async move { Ok::<_, BoxError>(x) });
//! let (split, handle) = Split::builder()
//!     .backend("v1", backend, 100.0)
//!     .backend("v2", backend, 0.0)
//!     .build()?;
//! let config = RolloutConfig {
//!     stable: "v1".into(),
//!     canary: "v2".into(),
//!     steps: vec![10.0, 50.0],
//!     min_step_duration: Duration::from_secs(1),
//!     analysis_interval: Duration::from_secs(1),
//!     min_samples: 5,
//!     latency: None,
//!     ..RolloutConfig::default()
//! };
//! let rollout = Rollout::new(handle.clone(), config)?.start();
//! let traffic = tokio::spawn(async move {
//!     loop {
//!         let _ = split.clone().oneshot(1).await;
//!         tokio::time::sleep(Duration::from_millis(10)).await;
//!     }
//! });
//! assert_eq!(rollout.finished().await, RolloutState::Promoted);
//! assert_eq!(handle.weights()[1], ("v2".to_string(), 100.0));
//! traffic.abort();
//! # Ok(())
//! # }
//! ```

mod config;
pub mod drift;
mod event;
mod handle;
mod target;
mod worker;

use std::fmt;

use tokio::sync::{broadcast, mpsc, watch};

pub use config::{LatencyCheck, LatencyLimit, RolloutConfig};
pub use event::{RolloutEvent, RolloutEventKind, RolloutState};
pub use handle::{RolloutFinished, RolloutHandle};
pub use target::RolloutTarget;

use crate::error::ConfigError;
use drift::DriftMonitor;
use worker::{EventFn, Worker};

/// A validated rollout, ready to start.
pub struct Rollout<T> {
    target: T,
    config: RolloutConfig,
    events: broadcast::Sender<RolloutEvent>,
    on_event: Option<EventFn>,
    drift: Option<DriftMonitor>,
}

impl<T> fmt::Debug for Rollout<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rollout")
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<T: RolloutTarget> Rollout<T> {
    /// Validates `config` for `target`.
    pub fn new(target: T, config: RolloutConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        let (events, _) = broadcast::channel(256);
        Ok(Self {
            target,
            config,
            events,
            on_event: None,
            drift: None,
        })
    }

    /// Adds the prediction-drift check: every analysis also judges the
    /// pairs `monitor` collected since the step (or the last failed
    /// analysis) began, against the monitor's thresholds. The rollout resets
    /// the monitor's window when it starts a step or restarts a window.
    pub fn drift(mut self, monitor: DriftMonitor) -> Self {
        self.drift = Some(monitor);
        self
    }

    /// Calls `f` with every event, on the controller's task (keep it quick).
    pub fn on_event(mut self, f: impl Fn(&RolloutEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Box::new(f));
        self
    }

    /// Events from the start (subscribe before [`start`](Self::start) to see the first step).
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.events.subscribe()
    }

    /// Spawns the controller on the current tokio runtime and applies the first step.
    pub fn start(self) -> RolloutHandle {
        let (commands_tx, commands_rx) = mpsc::channel(16);
        let first = RolloutState::Progressing {
            step: 0,
            canary_percent: self.config.steps[0],
        };
        let (state_tx, state_rx) = watch::channel(first);
        let worker = Worker::new(
            self.target,
            self.config,
            self.events.clone(),
            self.on_event,
            self.drift,
            state_tx,
            commands_rx,
        );
        tokio::spawn(worker.run());
        RolloutHandle {
            commands: commands_tx,
            events: self.events,
            state: state_rx,
        }
    }
}
