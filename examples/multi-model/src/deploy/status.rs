//! What a deployment shows of itself beside its versions: the rollout
//! running now or the last one, and the registry's latest news.
//!
//! [`Status`] keeps what `/v1/models` shows: the rollout's versions, state,
//! step, canary share and every event with its reason, and the registry's
//! latest news. The KServe v2 model metadata shows the same rollout, less
//! its events ([`RolloutSummary`], see [`crate::v2`]). `crate::rollout`
//! runs rollouts and records them here.

use std::sync::Arc;

use convoy_router::rollout::{RolloutEvent, RolloutState};
use convoy_router::RolloutHandle;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

/// Events kept per rollout (the latest).
const MAX_EVENTS: usize = 64;

/// Registry messages kept (the latest).
const MAX_REGISTRY: usize = 16;

/// A deployment's rollout (running or the last one) and registry news.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rollout: Option<Run>,
    registry: Vec<String>,
}

#[derive(Debug)]
struct Run {
    stable: String,
    canary: String,
    steps: usize,
    started: Instant,
    started_unix_ms: u64,
    handle: Option<RolloutHandle>,
    /// The canary never got traffic: it did not start.
    failed: bool,
    events: Vec<RolloutEventInfo>,
}

/// A rollout as `/v1/models` shows it: its [`RolloutSummary`] and events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// Versions, state, step and canary share.
    #[serde(flatten)]
    pub summary: RolloutSummary,
    /// Every event (the latest 64), oldest first.
    pub events: Vec<RolloutEventInfo>,
}

/// Where a rollout stands: what `/v1/models` shows of it beside its
/// events, and what the KServe v2 model metadata shows as
/// `parameters.rollout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    /// The version serving before the rollout.
    pub stable: String,
    /// The version rolled out.
    pub canary: String,
    /// When it began, milliseconds since the Unix epoch (the events'
    /// `at_ms` count from here).
    pub started_unix_ms: u64,
    /// `starting` (the canary's replicas start; no traffic yet),
    /// `progressing`, `paused`, `rolling_back`, `promoted`, `rolled_back`,
    /// or `failed` (the canary never started; `last_reason` says why).
    pub state: String,
    /// The step (0-based) while progressing or paused.
    pub step: Option<usize>,
    /// How many steps the plan has.
    #[serde(default)]
    pub steps: usize,
    /// The canary's share of the traffic now, percent.
    pub canary_percent: f64,
    /// The latest event's reason.
    pub last_reason: String,
}

/// One rollout event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutEventInfo {
    /// Milliseconds since the rollout began.
    pub at_ms: u64,
    /// `StepStarted`, `AnalysisPassed`, `AnalysisFailed`, `Promoted`...
    pub kind: String,
    /// The canary's share after it, percent.
    pub canary_percent: f64,
    /// Why (thresholds and measured figures included).
    pub reason: String,
}

impl Status {
    /// A rollout from `stable` to `canary` through `steps` steps begins
    /// (before the canary starts).
    pub(crate) fn begin(&self, stable: &str, canary: &str, steps: usize) {
        self.inner.lock().rollout = Some(Run {
            stable: stable.into(),
            canary: canary.into(),
            steps,
            started: Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            handle: None,
            failed: false,
            events: Vec::new(),
        });
    }

    /// The canary did not start (no traffic moved): the rollout is over.
    pub(crate) fn fail(&self, reason: String) {
        if let Some(run) = &mut self.inner.lock().rollout {
            run.failed = true;
            run.push(RolloutEventInfo {
                at_ms: run.started.elapsed().as_millis() as u64,
                kind: "StartFailed".into(),
                canary_percent: 0.0,
                reason,
            });
        }
    }

    /// The running rollout's handle.
    pub(crate) fn attach(&self, handle: RolloutHandle) {
        if let Some(run) = &mut self.inner.lock().rollout {
            run.handle = Some(handle);
        }
    }

    /// Logs every event of `deployment`'s rollout and keeps it.
    pub(crate) fn recorder(
        self: &Arc<Self>,
        deployment: &str,
    ) -> impl Fn(&RolloutEvent) + Send + Sync + 'static {
        let (status, deployment) = (Arc::clone(self), deployment.to_string());
        move |e| {
            tracing::info!(deployment = %deployment, kind = ?e.kind, step = e.step, percent = e.canary_percent, reason = %e.reason, "rollout");
            if let Some(run) = &mut status.inner.lock().rollout {
                let at_ms = e.at.saturating_duration_since(run.started).as_millis() as u64;
                run.push(RolloutEventInfo {
                    at_ms,
                    kind: format!("{:?}", e.kind),
                    canary_percent: e.canary_percent,
                    reason: e.reason.clone(),
                });
            }
        }
    }

    /// Keeps a registry message (and logs nothing: the caller did).
    pub(crate) fn registry_news(&self, message: String) {
        let mut inner = self.inner.lock();
        if inner.registry.len() == MAX_REGISTRY {
            inner.registry.remove(0);
        }
        inner.registry.push(message);
    }

    /// The registry's latest messages, oldest first.
    pub fn registry(&self) -> Vec<String> {
        self.inner.lock().registry.clone()
    }

    /// The rollout running now, or the last one.
    pub fn rollout(&self) -> Option<RolloutInfo> {
        let inner = self.inner.lock();
        let run = inner.rollout.as_ref()?;
        Some(RolloutInfo {
            summary: run.summary(),
            events: run.events.clone(),
        })
    }

    /// Where the rollout running now (or the last one) stands, without
    /// its events.
    pub fn summary(&self) -> Option<RolloutSummary> {
        self.inner.lock().rollout.as_ref().map(Run::summary)
    }

    /// The running rollout's handle (to pause, resume, abort or promote
    /// it), once its canary has started.
    pub fn handle(&self) -> Option<RolloutHandle> {
        self.inner.lock().rollout.as_ref()?.handle.clone()
    }
}

impl Run {
    fn push(&mut self, event: RolloutEventInfo) {
        if self.events.len() == MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    fn summary(&self) -> RolloutSummary {
        let state = match &self.handle {
            None if self.failed => return self.summarize("failed", None, 0.0),
            None => return self.summarize("starting", None, 0.0),
            Some(handle) => handle.state(),
        };
        let (name, step, canary_percent) = match state {
            RolloutState::Progressing {
                step,
                canary_percent,
            } => ("progressing", Some(step), canary_percent),
            RolloutState::Paused {
                step,
                canary_percent,
            } => ("paused", Some(step), canary_percent),
            RolloutState::RollingBack { canary_percent } => ("rolling_back", None, canary_percent),
            RolloutState::Promoted => ("promoted", None, 100.0),
            RolloutState::RolledBack => ("rolled_back", None, 0.0),
            _ => ("unknown", None, 0.0),
        };
        self.summarize(name, step, canary_percent)
    }

    fn summarize(&self, state: &str, step: Option<usize>, canary_percent: f64) -> RolloutSummary {
        RolloutSummary {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            started_unix_ms: self.started_unix_ms,
            state: state.into(),
            step,
            steps: self.steps,
            canary_percent,
            last_reason: self
                .events
                .last()
                .map(|e| e.reason.clone())
                .unwrap_or_default(),
        }
    }
}
