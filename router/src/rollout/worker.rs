//! The rollout's state machine, run on one tokio task.

use std::time::Duration;

use tokio::sync::{broadcast, mpsc, watch};
use tokio::time::{Instant, MissedTickBehavior};

use super::config::{LatencyLimit, RolloutConfig};
use super::drift::{DriftMonitor, DriftVerdict};
use super::event::{RolloutEvent, RolloutEventKind, RolloutState};
use super::handle::Command;
use super::target::RolloutTarget;
use crate::stats::BackendSnapshot;

pub(crate) type EventFn = Box<dyn Fn(&RolloutEvent) + Send + Sync>;

enum Verdict {
    /// Not enough data; the first field names what is missing, so a new
    /// kind of wait is reported once even after another was.
    Wait(&'static str, String),
    Pass(String),
    Fail(String),
}

pub(crate) struct Worker<T> {
    pub(crate) target: T,
    pub(crate) config: RolloutConfig,
    pub(crate) events: broadcast::Sender<RolloutEvent>,
    pub(crate) on_event: Option<EventFn>,
    drift: Option<DriftMonitor>,
    pub(crate) state: watch::Sender<RolloutState>,
    pub(crate) commands: mpsc::Receiver<Command>,
    step: usize,
    percent: f64,
    failures: u32,
    window: BackendSnapshot,
    step_started: Instant,
    stable_baseline: BackendSnapshot,
    waiting_reported: Option<&'static str>,
}

impl<T: RolloutTarget> Worker<T> {
    pub(crate) fn new(
        target: T,
        config: RolloutConfig,
        events: broadcast::Sender<RolloutEvent>,
        on_event: Option<EventFn>,
        drift: Option<DriftMonitor>,
        state: watch::Sender<RolloutState>,
        commands: mpsc::Receiver<Command>,
    ) -> Self {
        let window = BackendSnapshot::empty(config.canary.clone());
        let stable_baseline = BackendSnapshot::empty(config.stable.clone());
        Self {
            target,
            config,
            events,
            on_event,
            drift,
            state,
            commands,
            step: 0,
            percent: 0.0,
            failures: 0,
            window,
            step_started: Instant::now(),
            stable_baseline,
            waiting_reported: None,
        }
    }

    fn emit(&self, kind: RolloutEventKind, reason: impl Into<String>) {
        let event = RolloutEvent {
            kind,
            step: self.step,
            canary_percent: self.percent,
            reason: reason.into(),
            at: Instant::now(),
        };
        tracing::info!(
            canary = %self.config.canary,
            kind = ?event.kind,
            step = event.step,
            canary_percent = event.canary_percent,
            reason = %event.reason,
            "rollout event"
        );
        if let Some(f) = &self.on_event {
            f(&event);
        }
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    fn snapshot(&self, name: &str) -> BackendSnapshot {
        self.target
            .snapshot(name)
            .unwrap_or_else(|| BackendSnapshot::empty(name))
    }

    /// Applies a weight; on failure reports it and returns false.
    fn apply(&mut self, percent: f64) -> bool {
        match self
            .target
            .set_canary_percent(&self.config.stable, &self.config.canary, percent)
        {
            Ok(()) => {
                self.percent = percent;
                true
            }
            Err(e) => {
                self.emit(
                    RolloutEventKind::TargetError,
                    format!("setting canary to {percent}% failed: {e}"),
                );
                false
            }
        }
    }

    fn reset_window(&mut self) {
        self.window = self.snapshot(&self.config.canary.clone());
        if let Some(drift) = &self.drift {
            drift.reset();
        }
        self.step_started = Instant::now();
        self.waiting_reported = None;
    }

    fn start_step(&mut self, step: usize) -> bool {
        self.step = step;
        let percent = self.config.steps[step];
        if !self.apply(percent) {
            return false;
        }
        self.reset_window();
        self.state.send_replace(RolloutState::Progressing {
            step,
            canary_percent: percent,
        });
        self.emit(
            RolloutEventKind::StepStarted,
            format!(
                "step {} of {}: canary at {percent}%",
                step + 1,
                self.config.steps.len()
            ),
        );
        true
    }

    pub(crate) async fn run(mut self) {
        self.stable_baseline = self.snapshot(&self.config.stable.clone());
        if !self.start_step(0) {
            return self
                .rollback("could not apply the first step".to_owned())
                .await;
        }
        let interval = self.config.analysis_interval;
        let mut ticker = tokio::time::interval_at(Instant::now() + interval, interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut commands_open = true;
        let mut paused = false;
        loop {
            tokio::select! {
                cmd = self.commands.recv(), if commands_open => match cmd {
                    None => commands_open = false,
                    Some(Command::Pause) if !paused => {
                        paused = true;
                        self.state.send_replace(RolloutState::Paused { step: self.step, canary_percent: self.percent });
                        self.emit(RolloutEventKind::Paused, "paused by operator");
                    }
                    Some(Command::Resume) if paused => {
                        paused = false;
                        self.reset_window();
                        self.state.send_replace(RolloutState::Progressing { step: self.step, canary_percent: self.percent });
                        self.emit(RolloutEventKind::Resumed, "resumed by operator; analysis window restarted");
                    }
                    Some(Command::Pause | Command::Resume) => {}
                    Some(Command::Abort(reason)) => {
                        return self.rollback(format!("aborted by operator: {reason}")).await;
                    }
                    Some(Command::Promote) => {
                        return self.promote("promoted by operator".to_owned());
                    }
                },
                _ = ticker.tick() => {
                    if paused {
                        continue;
                    }
                    match self.analyze() {
                        Verdict::Wait(what, reason) => {
                            if self.waiting_reported != Some(what) {
                                self.waiting_reported = Some(what);
                                self.emit(RolloutEventKind::Waiting, reason);
                            }
                        }
                        Verdict::Fail(reason) => {
                            self.failures += 1;
                            self.emit(
                                RolloutEventKind::AnalysisFailed,
                                format!("{reason} (failure {} of {})", self.failures, self.config.failure_limit),
                            );
                            if self.failures >= self.config.failure_limit {
                                return self.rollback(format!("failure limit reached: {reason}")).await;
                            }
                            // Judge the next window on fresh samples.
                            let started = self.step_started;
                            self.reset_window();
                            self.step_started = started;
                        }
                        Verdict::Pass(reason) => {
                            if self.step_started.elapsed() < self.config.min_step_duration {
                                continue;
                            }
                            self.emit(RolloutEventKind::AnalysisPassed, reason);
                            let next = self.step + 1;
                            if next == self.config.steps.len() {
                                return self.promote("analysis passed at every step".to_owned());
                            }
                            if !self.start_step(next) {
                                return self.rollback("could not apply the next step".to_owned()).await;
                            }
                        }
                    }
                }
            }
        }
    }

    fn analyze(&self) -> Verdict {
        let cfg = &self.config;
        let canary = self.snapshot(&cfg.canary).since(&self.window);
        let n = canary.completed;
        if n < cfg.min_samples {
            return Verdict::Wait(
                "canary",
                format!(
                    "{n} of {} canary samples needed for a verdict",
                    cfg.min_samples
                ),
            );
        }
        let error_rate = canary.error_rate();
        if error_rate > cfg.max_error_rate {
            return Verdict::Fail(format!(
                "canary error rate {:.2}% > {:.2}% over {n} requests",
                error_rate * 100.0,
                cfg.max_error_rate * 100.0
            ));
        }
        let mut reason = format!(
            "canary error rate {:.2}% <= {:.2}% over {n} requests",
            error_rate * 100.0,
            cfg.max_error_rate * 100.0
        );
        if let Some(check) = &cfg.latency {
            let observed = canary.latency.quantile(check.quantile);
            let limit = match check.limit {
                LatencyLimit::Absolute(d) => d,
                LatencyLimit::StableFactor(f) => {
                    let stable = self.snapshot(&cfg.stable).since(&self.stable_baseline);
                    if stable.completed < cfg.min_samples {
                        return Verdict::Wait(
                            "stable",
                            format!(
                                "{} of {} stable samples needed for a latency comparison",
                                stable.completed, cfg.min_samples
                            ),
                        );
                    }
                    stable
                        .latency
                        .quantile(check.quantile)
                        .mul_f64(f)
                        .max(Duration::from_micros(1))
                }
            };
            if observed > limit {
                return Verdict::Fail(format!(
                    "canary p{} latency {observed:?} > {limit:?}",
                    check.quantile * 100.0
                ));
            }
            reason.push_str(&format!(
                "; p{} latency {observed:?} <= {limit:?}",
                check.quantile * 100.0
            ));
        }
        if let Some(drift) = &self.drift {
            match drift.verdict() {
                DriftVerdict::Wait(r) => return Verdict::Wait("drift", r),
                DriftVerdict::Fail(r) => return Verdict::Fail(r),
                DriftVerdict::Pass(r) => {
                    reason.push_str("; ");
                    reason.push_str(&r);
                }
            }
        }
        Verdict::Pass(reason)
    }

    fn promote(mut self, reason: String) {
        self.apply(100.0);
        self.state.send_replace(RolloutState::Promoted);
        self.emit(RolloutEventKind::Promoted, reason);
    }

    async fn rollback(mut self, reason: String) {
        let from = self.percent;
        self.state.send_replace(RolloutState::RollingBack {
            canary_percent: from,
        });
        self.emit(
            RolloutEventKind::RollbackStarted,
            format!(
                "{reason}; ramping {from}% -> 0% in {} steps",
                self.config.rollback_steps
            ),
        );
        let n = self.config.rollback_steps;
        for k in 1..=n {
            if k > 1 {
                tokio::time::sleep(self.config.rollback_interval).await;
            }
            let percent = if k == n {
                0.0
            } else {
                from * f64::from(n - k) / f64::from(n)
            };
            self.apply(percent);
            self.state.send_replace(RolloutState::RollingBack {
                canary_percent: self.percent,
            });
            self.emit(
                RolloutEventKind::RollbackStep,
                format!("rollback step {k} of {n}"),
            );
        }
        self.state.send_replace(RolloutState::RolledBack);
        self.emit(RolloutEventKind::RolledBack, reason);
    }
}
