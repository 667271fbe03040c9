use tokio::time::Instant;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RolloutEventKind {
    /// A step began: the canary now gets `canary_percent`.
    StepStarted,
    /// Not enough samples for a verdict yet.
    Waiting,
    /// The step's analysis passed and its minimum duration is over.
    AnalysisPassed,
    /// The step's analysis failed (reason says which check).
    AnalysisFailed,
    /// Paused by the operator: weights are held, no analysis.
    Paused,
    /// Resumed by the operator: the step's analysis window restarts.
    Resumed,
    /// The canary got 100 % and the rollout is over.
    Promoted,
    /// The rollback began (failure limit reached or abort).
    RollbackStarted,
    /// One rollback step lowered the canary to `canary_percent`.
    RollbackStep,
    /// The canary is at 0 % and the rollout is over.
    RolledBack,
    /// Applying weights to the split failed.
    TargetError,
}

/// A rollout transition, with its reason.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RolloutEvent {
    /// What happened.
    pub kind: RolloutEventKind,
    /// Index of the current step in `RolloutConfig::steps`.
    pub step: usize,
    /// The canary's percentage after the event.
    pub canary_percent: f64,
    /// Why, in words (thresholds and measured values included).
    pub reason: String,
    /// When (tokio clock).
    pub at: Instant,
}

/// Where a rollout stands.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum RolloutState {
    /// Running step `step` with the canary at `canary_percent`.
    Progressing {
        /// Step index.
        step: usize,
        /// Canary percentage.
        canary_percent: f64,
    },
    /// Paused at `step`.
    Paused {
        /// Step index.
        step: usize,
        /// Canary percentage.
        canary_percent: f64,
    },
    /// Ramping the canary down.
    RollingBack {
        /// Canary percentage.
        canary_percent: f64,
    },
    /// Finished: the canary serves 100 %.
    Promoted,
    /// Finished: the canary serves 0 %.
    RolledBack,
}

impl RolloutState {
    /// Whether the rollout is over.
    pub fn is_finished(&self) -> bool {
        matches!(self, Self::Promoted | Self::RolledBack)
    }
}
