use std::fmt;

use tokio::sync::{broadcast, mpsc, watch};

use super::event::{RolloutEvent, RolloutState};

#[derive(Debug)]
pub(crate) enum Command {
    Pause,
    Resume,
    Abort(String),
    Promote,
}

/// The rollout is over; commands have no effect.
#[derive(Debug)]
pub struct RolloutFinished {
    _p: (),
}

impl fmt::Display for RolloutFinished {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the rollout is already finished")
    }
}

impl std::error::Error for RolloutFinished {}

/// Controls a running rollout and observes it.
#[derive(Clone, Debug)]
pub struct RolloutHandle {
    pub(crate) commands: mpsc::Sender<Command>,
    pub(crate) events: broadcast::Sender<RolloutEvent>,
    pub(crate) state: watch::Receiver<RolloutState>,
}

impl RolloutHandle {
    async fn send(&self, cmd: Command) -> Result<(), RolloutFinished> {
        self.commands
            .send(cmd)
            .await
            .map_err(|_| RolloutFinished { _p: () })
    }

    /// Holds the current weights and stops analysis.
    pub async fn pause(&self) -> Result<(), RolloutFinished> {
        self.send(Command::Pause).await
    }

    /// Continues a paused rollout; the step's analysis window restarts.
    pub async fn resume(&self) -> Result<(), RolloutFinished> {
        self.send(Command::Resume).await
    }

    /// Rolls back, ramped like an automatic rollback (no traffic cliff).
    pub async fn abort(&self, reason: impl Into<String>) -> Result<(), RolloutFinished> {
        self.send(Command::Abort(reason.into())).await
    }

    /// Promotes the canary to 100 % now, skipping the remaining steps.
    pub async fn promote(&self) -> Result<(), RolloutFinished> {
        self.send(Command::Promote).await
    }

    /// The current state.
    pub fn state(&self) -> RolloutState {
        self.state.borrow().clone()
    }

    /// Events from now on (a lagging receiver loses the oldest ones).
    pub fn subscribe(&self) -> broadcast::Receiver<RolloutEvent> {
        self.events.subscribe()
    }

    /// Waits until the rollout is promoted or rolled back.
    pub async fn finished(&self) -> RolloutState {
        let mut state = self.state.clone();
        let result = state
            .wait_for(RolloutState::is_finished)
            .await
            .map(|s| s.clone());
        match result {
            Ok(s) => s,
            // The worker is gone: its last state is final.
            Err(_) => state.borrow().clone(),
        }
    }
}
