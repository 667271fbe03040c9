use std::cmp::Ordering;
use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::config::EngineConfig;
use crate::error::ConfigError;
use crate::policy::{Policy, PolicyInput, Reason};
use crate::signal::{LoadSample, Window};

/// Bound on the stabilization history (memory stays bounded whatever the call rate).
const HISTORY_CAP: usize = 4096;

/// Replica counts as the scaler sees them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct ReplicaCounts {
    /// Replicas that exist, including those still starting (not those draining).
    pub current: u32,
    /// Replicas ready to serve (at most `current`).
    pub ready: u32,
}

impl ReplicaCounts {
    /// Counts with `ready` capped at `current`.
    pub fn new(current: u32, ready: u32) -> Self {
        Self {
            current,
            ready: ready.min(current),
        }
    }

    /// `n` replicas, all ready.
    pub fn ready(n: u32) -> Self {
        Self::new(n, n)
    }
}

/// The outcome of one [`Engine::evaluate`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScaleDecision {
    /// When it was made.
    pub at: Duration,
    /// The replica count to scale to (equal to `current` when nothing changes).
    pub desired: u32,
    /// Replicas at the time of the decision.
    pub current: u32,
    /// Ready replicas at the time of the decision.
    pub ready: u32,
    /// What the policy recommended, before bounds, delays and limits.
    pub recommended: u32,
    /// Why `desired` is what it is: the policy's reason when it was applied,
    /// else the engine rail that intervened (`"upscale_delay"`, `"step_limit"`, ...).
    pub reason: Reason,
    /// The policy's own reason.
    pub policy_reason: Reason,
}

impl ScaleDecision {
    /// `true` when the decision changes the replica count.
    pub fn changed(&self) -> bool {
        self.desired != self.current
    }

    /// `Greater` for a scale-up, `Less` for a scale-down, `Equal` for none.
    pub fn direction(&self) -> Ordering {
        self.desired.cmp(&self.current)
    }
}

/// The pure, synchronous autoscaling step: a policy plus guard rails.
///
/// Feed it samples with [`record`](Engine::record) and call
/// [`evaluate`](Engine::evaluate) once per [`interval`](EngineConfig::interval)
/// with the replica counts. Time is a [`Duration`] since an arbitrary epoch,
/// so the simulator drives it in virtual time and the [`Autoscaler`](crate::Autoscaler)
/// on the tokio clock.
///
/// Each evaluation, in order:
/// 1. the first evaluation with fewer than the initial replicas returns the initial count;
/// 2. the policy recommends a count, which is clamped to `[min_replicas, max_replicas]`;
/// 3. scale-down stabilization: not below the highest recommendation of the window;
/// 4. delays, measured in time: a change in one direction happens only after the
///    recommendation has pointed that way continuously for the direction's
///    delay (restarting after each change, as Ray Serve does); from zero
///    replicas, scale-up is immediate; a scale-down to zero first goes to one
///    replica, then to zero after `scale_to_zero_delay` of zero recommendations;
/// 5. cold start: no scale-down while replicas are starting (up to `cold_start_timeout`);
/// 6. step limits per evaluation, then the bounds again (bounds always win, and
///    a count outside them is corrected at once, without delay).
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale::{Engine, EngineConfig, LoadSample, ReplicaCounts, TargetOngoing, TargetOngoingConfig};
///
/// let policy = TargetOngoing::new(TargetOngoingConfig::default())?;
/// let config = EngineConfig::default().max_replicas(8).upscale_delay(Duration::from_secs(3));
/// let mut engine = Engine::new(config, Box::new(policy))?;
/// let mut replicas = 1;
/// for s in 0..10 {
///     let now = Duration::from_secs(s);
///     engine.record(now, LoadSample::ongoing(12.0));
///     let decision = engine.evaluate(now, ReplicaCounts::ready(replicas));
///     replicas = decision.desired;
/// }
/// assert_eq!(replicas, 6); // 12 ongoing / target 2, after the 3 s upscale delay
/// # Ok::<(), convoy_autoscale::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct Engine {
    config: EngineConfig,
    policy: Box<dyn Policy>,
    window: Window,
    initialized: bool,
    pending: Option<(Ordering, Duration)>,
    zero_since: Option<Duration>,
    starting_since: Option<Duration>,
    history: VecDeque<(Duration, u32)>,
    last: Option<ScaleDecision>,
}

impl Engine {
    /// Validates `config` and builds an engine around `policy`.
    pub fn new(config: EngineConfig, policy: Box<dyn Policy>) -> Result<Self, ConfigError> {
        config.validate()?;
        let horizon = policy
            .horizon()
            .max(config.interval.saturating_mul(2))
            .max(Duration::from_secs(1));
        Ok(Self {
            window: Window::new(horizon.saturating_add(config.interval)),
            config,
            policy,
            initialized: false,
            pending: None,
            zero_since: None,
            starting_since: None,
            history: VecDeque::new(),
            last: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// The policy.
    pub fn policy(&self) -> &dyn Policy {
        &*self.policy
    }

    /// The signal window.
    pub fn window(&self) -> &Window {
        &self.window
    }

    /// The most recent decision.
    pub fn last_decision(&self) -> Option<&ScaleDecision> {
        self.last.as_ref()
    }

    /// Records a deployment-level sample taken at `now`. Returns `false` if
    /// it was rejected (NaN or negative gauges, time going backwards): a
    /// rejected sample counts as missing data.
    pub fn record(&mut self, now: Duration, sample: LoadSample) -> bool {
        self.window.push(now, sample)
    }

    /// Runs one autoscaling step; see the [type docs](Engine). Never panics.
    pub fn evaluate(&mut self, now: Duration, counts: ReplicaCounts) -> ScaleDecision {
        let decision = self.step(now, counts);
        self.last = Some(decision);
        decision
    }

    fn step(&mut self, now: Duration, counts: ReplicaCounts) -> ScaleDecision {
        let cfg = &self.config;
        let (min, max) = (cfg.min_replicas, cfg.max_replicas);
        let current = counts.current;
        let ready = counts.ready.min(current);
        let decision =
            |desired: u32, recommended: u32, reason: Reason, policy_reason: Reason| ScaleDecision {
                at: now,
                desired,
                current,
                ready,
                recommended,
                reason,
                policy_reason,
            };

        if current > ready {
            self.starting_since.get_or_insert(now);
        } else {
            self.starting_since = None;
        }

        let input = PolicyInput::new(now, current, ready, &self.window).with_bounds(min, max);
        let rec = self.policy.decide(&input);
        let policy_reason = rec.reason;

        if !self.initialized {
            self.initialized = true;
            let initial = cfg.initial();
            if current < initial {
                self.pending = None;
                return decision(initial, rec.desired, Reason::new("initial"), policy_reason);
            }
        }

        // Bounds.
        let mut reason = rec.reason;
        let mut target = rec.desired;
        if target < min {
            target = min;
            reason = Reason::new("min_replicas");
        } else if target > max {
            target = max;
            reason = Reason::new("max_replicas");
        }
        if target == 0 {
            self.zero_since.get_or_insert(now);
        } else {
            self.zero_since = None;
        }

        // A count outside the bounds is corrected at once.
        if current < min || current > max {
            self.pending = None;
            let fixed = current.clamp(min, max);
            let kind = if current < min {
                "min_replicas"
            } else {
                "max_replicas"
            };
            return decision(fixed, rec.desired, Reason::new(kind), policy_reason);
        }

        // Scale-down stabilization (HPA style): not below the recent maximum.
        if !cfg.downscale_stabilization.is_zero() {
            // A monotonic queue: its front is the maximum of the window.
            while self.history.back().is_some_and(|&(_, r)| r <= target) {
                self.history.pop_back();
            }
            self.history.push_back((now, target));
            while self.history.front().is_some_and(|&(t, _)| {
                (t != now && now.saturating_sub(t) >= cfg.downscale_stabilization)
                    || self.history.len() > HISTORY_CAP
            }) {
                self.history.pop_front();
            }
            if target < current {
                let recent_max = self.history.front().map_or(target, |&(_, r)| r);
                let stabilized = recent_max.min(current);
                if stabilized > target {
                    target = stabilized;
                    reason = Reason::new("stabilized");
                }
            }
        }

        // Delays, in time.
        let direction = target.cmp(&current);
        match direction {
            Ordering::Equal => {
                self.pending = None;
                return decision(current, rec.desired, reason, policy_reason);
            }
            d => {
                if self.pending.map(|(pd, _)| pd) != Some(d) {
                    self.pending = Some((d, now));
                }
            }
        }
        let since = self.pending.map_or(now, |(_, t)| t);
        let waited = now.saturating_sub(since);

        if direction == Ordering::Greater {
            if current > 0 && waited < cfg.upscale_delay {
                return decision(
                    current,
                    rec.desired,
                    Reason::new("upscale_delay"),
                    policy_reason,
                );
            }
            if let Some(step) = cfg.max_step_up {
                if target - current > step {
                    target = current + step;
                    reason = Reason::new("step_limit");
                }
            }
        } else {
            if cfg.hold_down_while_starting && current > ready {
                let starting_for = now.saturating_sub(self.starting_since.unwrap_or(now));
                if starting_for < cfg.cold_start_timeout {
                    return decision(
                        current,
                        rec.desired,
                        Reason::new("cold_start_hold"),
                        policy_reason,
                    );
                }
            }
            if waited < cfg.downscale_delay {
                return decision(
                    current,
                    rec.desired,
                    Reason::new("downscale_delay"),
                    policy_reason,
                );
            }
            if target == 0 {
                if current > 1 {
                    target = 1;
                } else {
                    let zero_for = now.saturating_sub(self.zero_since.unwrap_or(now));
                    if zero_for < cfg.effective_scale_to_zero_delay() {
                        return decision(
                            current,
                            rec.desired,
                            Reason::new("scale_to_zero_delay"),
                            policy_reason,
                        );
                    }
                }
            }
            if let Some(step) = cfg.max_step_down {
                if current - target > step {
                    target = current - step;
                    reason = Reason::new("step_limit");
                }
            }
        }

        let target = target.clamp(min, max);
        // A change restarts the delay, as Ray Serve resets its decision counter.
        self.pending = None;
        decision(target, rec.desired, reason, policy_reason)
    }
}
