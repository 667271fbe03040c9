use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{ceil_count, floor_count, Policy, PolicyInput, Reason, Recommendation};
use crate::error::{non_zero, positive, within, ConfigError, ConfigErrorKind};
use crate::signal::Signal;

/// Bound on remembered recommendations and scale events (memory stays bounded
/// even if `decide` is called far more often than the windows need).
const HISTORY_CAP: usize = 4096;

/// The HPA metric target.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HpaTarget {
    /// A per-replica average (HPA `AverageValue`/`Utilization` of a Pods or
    /// Resource metric): the deployment total divided by the replicas that
    /// reported. Missing and not-ready replicas follow HPA's rules.
    AverageValue(f64),
    /// A whole-deployment value (HPA `Value` of an Object or External
    /// metric), such as a latency in seconds.
    Value(f64),
}

/// How to combine several scaling rules (HPA `selectPolicy`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// Allow the largest change (HPA default).
    Max,
    /// Allow the smallest change.
    Min,
    /// Never scale in this direction.
    Disabled,
}

/// The kind of an HPA scaling rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HpaRuleKind {
    /// Change by at most `value` replicas per period (HPA `type: Pods`).
    Pods,
    /// Change by at most `value` percent of the replicas at the period start (HPA `type: Percent`).
    Percent,
}

/// One HPA scaling rule: at most `value` (replicas or percent) per `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HpaRule {
    /// Pods or Percent.
    pub kind: HpaRuleKind,
    /// The amount; must be > 0.
    pub value: u32,
    /// The period; must be > 0 (HPA `periodSeconds`, at most 1800 s there).
    pub period: Duration,
}

impl HpaRule {
    /// At most `value` replicas per `period`.
    pub fn pods(value: u32, period: Duration) -> Self {
        Self {
            kind: HpaRuleKind::Pods,
            value,
            period,
        }
    }

    /// At most `value` percent per `period`.
    pub fn percent(value: u32, period: Duration) -> Self {
        Self {
            kind: HpaRuleKind::Percent,
            value,
            period,
        }
    }
}

/// HPA `behavior.scaleUp` / `behavior.scaleDown`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HpaScalingRules {
    /// Recommendations are stabilized over this window: for scale-up the
    /// minimum, for scale-down the maximum of the recent recommendations.
    pub stabilization_window: Duration,
    /// How to combine the rules.
    pub select: SelectPolicy,
    /// Rate rules (at most 16).
    pub rules: Vec<HpaRule>,
}

impl HpaScalingRules {
    /// HPA default `scaleUp`: no stabilization, max of 4 pods or 100 % per 15 s.
    pub fn default_scale_up() -> Self {
        Self {
            stabilization_window: Duration::ZERO,
            select: SelectPolicy::Max,
            rules: vec![
                HpaRule::pods(4, Duration::from_secs(15)),
                HpaRule::percent(100, Duration::from_secs(15)),
            ],
        }
    }

    /// HPA default `scaleDown`: 300 s stabilization, 100 % per 15 s.
    pub fn default_scale_down() -> Self {
        Self {
            stabilization_window: Duration::from_secs(300),
            select: SelectPolicy::Max,
            rules: vec![HpaRule::percent(100, Duration::from_secs(15))],
        }
    }

    fn validate(&self, field: &'static str) -> Result<(), ConfigError> {
        if self.rules.len() > 16 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                field,
                "at most 16 rules",
            ));
        }
        if self.rules.is_empty() && self.select != SelectPolicy::Disabled {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidNumber,
                field,
                "needs at least one rule unless select is Disabled",
            ));
        }
        for r in &self.rules {
            non_zero(field, r.period)?;
            if r.value == 0 {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidNumber,
                    field,
                    "rule value must be > 0",
                ));
            }
        }
        Ok(())
    }

    fn longest_period(&self) -> Duration {
        self.rules
            .iter()
            .map(|r| r.period)
            .max()
            .unwrap_or_default()
    }
}

/// Configuration of [`Hpa`], mirroring the Kubernetes HorizontalPodAutoscaler (autoscaling/v2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct HpaConfig {
    /// The metric. Default [`Signal::Ongoing`] (a Pods metric of concurrency).
    pub metric: Signal,
    /// The target. Default `AverageValue(2.0)` ongoing requests per replica. Must be finite and > 0.
    pub target: HpaTarget,
    /// No scaling while `|usage/target − 1| ≤ tolerance`. Default `0.1`
    /// (kube-controller-manager `--horizontal-pod-autoscaler-tolerance`). Within `[0, 1)`.
    pub tolerance: f64,
    /// The metric is averaged over this look-back. Default 30 s (a metrics-server
    /// style resolution window). Must be > 0.
    pub look_back: Duration,
    /// `behavior.scaleUp`. Default [`HpaScalingRules::default_scale_up`].
    pub scale_up: HpaScalingRules,
    /// `behavior.scaleDown`. Default [`HpaScalingRules::default_scale_down`].
    pub scale_down: HpaScalingRules,
}

impl Default for HpaConfig {
    fn default() -> Self {
        Self {
            metric: Signal::Ongoing,
            target: HpaTarget::AverageValue(2.0),
            tolerance: 0.1,
            look_back: Duration::from_secs(30),
            scale_up: HpaScalingRules::default_scale_up(),
            scale_down: HpaScalingRules::default_scale_down(),
        }
    }
}

impl HpaConfig {
    /// Sets [`metric`](Self::metric).
    pub fn metric(mut self, v: Signal) -> Self {
        self.metric = v;
        self
    }

    /// Sets [`target`](Self::target).
    pub fn target(mut self, v: HpaTarget) -> Self {
        self.target = v;
        self
    }

    /// Sets [`tolerance`](Self::tolerance).
    pub fn tolerance(mut self, v: f64) -> Self {
        self.tolerance = v;
        self
    }

    /// Sets [`look_back`](Self::look_back).
    pub fn look_back(mut self, v: Duration) -> Self {
        self.look_back = v;
        self
    }

    /// Sets [`scale_up`](Self::scale_up).
    pub fn scale_up(mut self, v: HpaScalingRules) -> Self {
        self.scale_up = v;
        self
    }

    /// Sets [`scale_down`](Self::scale_down).
    pub fn scale_down(mut self, v: HpaScalingRules) -> Self {
        self.scale_down = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.target {
            HpaTarget::AverageValue(t) | HpaTarget::Value(t) => positive("target", t)?,
        }
        within("tolerance", self.tolerance, 0.0, 0.999)?;
        non_zero("look_back", self.look_back)?;
        self.scale_up.validate("scale_up")?;
        self.scale_down.validate("scale_down")
    }

    /// Validates and builds the policy.
    pub fn build(self) -> Result<Hpa, ConfigError> {
        Hpa::new(self)
    }
}

/// The Kubernetes HPA algorithm.
///
/// 1. Replica count from the metric (`GetMetricReplicas`): with `AverageValue`,
///    `usage` is the look-back mean of the deployment total divided by the
///    replicas that reported ([`LoadSample::replicas_reporting`](crate::LoadSample::replicas_reporting),
///    default all ready replicas); `ratio = usage / target`; within the
///    tolerance nothing changes, else `desired = ceil(ratio · reporting)`. If
///    some ready replicas did not report, they count as 100 % of target when
///    scaling down and 0 when scaling up; when scaling up, not-ready replicas
///    count as 0; if that flips the direction or lands inside the tolerance,
///    nothing changes. With `Value`, `desired = ceil(ratio · ready)`.
/// 2. Stabilization (`stabilizeRecommendationWithBehaviors`): scale-down uses
///    the max of the recommendations in its window (300 s by default),
///    scale-up the min in its window (0 s by default).
/// 3. Rate rules (`convertDesiredReplicasWithBehaviorRate`): the replicas at
///    the start of each rule's period (current minus the changes made in the
///    period, each dated at the rescale as `storeScaleEvent` does) bound the
///    change; `select` picks the most or least permissive rule. Under
///    sustained load the default 100 % per 15 s rule doubles the replicas
///    at every 15 s sync.
///
/// No metrics hold. At zero replicas HPA does not act; here any load gives 1.
/// Run it in an engine with no delays
/// ([`EngineConfig::no_delays`](crate::EngineConfig::no_delays)), without
/// [`hold_down_while_starting`](crate::EngineConfig::hold_down_while_starting)
/// (HPA has no such rule) and a 15 s
/// interval (kube-controller-manager's `--horizontal-pod-autoscaler-sync-period`):
/// the stabilization and rate rules above are its hysteresis.
#[derive(Debug, Clone)]
pub struct Hpa {
    config: HpaConfig,
    up_min: VecDeque<(Duration, u32)>,
    down_max: VecDeque<(Duration, u32)>,
    events: VecDeque<(Duration, i64)>,
    /// The previous decision: when, the replicas it saw, what it recommended.
    last: Option<LastDecision>,
}

/// What [`Hpa`] remembers of its previous decision to date a rescale.
#[derive(Debug, Clone, Copy)]
struct LastDecision {
    at: Duration,
    current: u32,
    recommended: u32,
}

impl Hpa {
    /// Validates `config` and builds the policy.
    pub fn new(config: HpaConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config,
            up_min: VecDeque::new(),
            down_max: VecDeque::new(),
            events: VecDeque::new(),
            last: None,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &HpaConfig {
        &self.config
    }

    /// Step 1: the raw replica count from the metric (`None`: hold).
    fn metric_replicas(&self, input: &PolicyInput<'_>) -> Result<(u32, Reason), Reason> {
        let c = &self.config;
        let view = input.window.view(input.now, c.look_back);
        let Some(value) = view.mean(c.metric) else {
            return Err(Reason::new("no_metrics"));
        };
        let current = input.current;
        let tol = c.tolerance;
        match c.target {
            HpaTarget::Value(target) => {
                let ratio = value / target;
                let reason = Reason::new("scale").with_values(value, target);
                if (1.0 - ratio).abs() <= tol {
                    return Ok((
                        current,
                        Reason::new("within_tolerance").with_values(value, target),
                    ));
                }
                let base = if input.ready > 0 {
                    input.ready
                } else {
                    current
                };
                Ok((ceil_count(ratio * f64::from(base)), reason))
            }
            HpaTarget::AverageValue(target) => {
                let ready = input.ready;
                let reporting = view.replicas_reporting().unwrap_or(ready).min(ready);
                if reporting == 0 {
                    // Nobody reported: the metric is missing for every replica.
                    return Err(Reason::new("no_metrics"));
                }
                let missing = ready - reporting;
                let unready = current.saturating_sub(ready);
                let mut sum = value;
                let mut count = f64::from(reporting);
                let usage_ratio = sum / (target * count);
                let reason = Reason::new("scale").with_values(sum / count, target);
                let rebalance_unready = unready > 0 && usage_ratio > 1.0;
                if !rebalance_unready && missing == 0 {
                    if (1.0 - usage_ratio).abs() <= tol {
                        return Ok((
                            current,
                            Reason::new("within_tolerance").with_values(sum / count, target),
                        ));
                    }
                    return Ok((ceil_count(usage_ratio * count), reason));
                }
                if missing > 0 {
                    if usage_ratio < 1.0 {
                        sum += f64::from(missing) * target;
                    }
                    count += f64::from(missing);
                }
                if rebalance_unready {
                    count += f64::from(unready);
                }
                let new_ratio = sum / (target * count);
                if (1.0 - new_ratio).abs() <= tol
                    || (usage_ratio < 1.0 && new_ratio > 1.0)
                    || (usage_ratio > 1.0 && new_ratio < 1.0)
                {
                    return Ok((
                        current,
                        Reason::new("within_tolerance").with_values(sum / count, target),
                    ));
                }
                let new_replicas = ceil_count(new_ratio * count);
                if (new_ratio < 1.0 && new_replicas > current)
                    || (new_ratio > 1.0 && new_replicas < current)
                {
                    return Ok((
                        current,
                        Reason::new("within_tolerance").with_values(sum / count, target),
                    ));
                }
                Ok((new_replicas, reason))
            }
        }
    }

    /// Records changes of the replica count as scale events, dated when
    /// the rescale happened.
    ///
    /// Upstream `horizontal.go` stores the event (`storeScaleEvent`) at the
    /// moment it rescales, and a rate rule's period counts the events with
    /// `timestamp + period > now`; so at the next sync, one period later, the
    /// event has left the window. A policy only sees the new count at its
    /// next decision: a change in the direction the previous decision asked
    /// for is dated at that decision (the engine applied it then); any other
    /// change is dated when it is first seen.
    fn track_events(&mut self, now: Duration, current: u32) {
        if let Some(last) = self.last {
            if last.current != current {
                let delta = i64::from(current) - i64::from(last.current);
                let asked = i64::from(last.recommended) - i64::from(last.current);
                let at = if asked.signum() == delta.signum() {
                    last.at
                } else {
                    now
                };
                self.events.push_back((at, delta));
                if self.events.len() > HISTORY_CAP {
                    self.events.pop_front();
                }
            }
        }
        let keep = self
            .config
            .scale_up
            .longest_period()
            .max(self.config.scale_down.longest_period());
        while let Some(&(t, _)) = self.events.front() {
            if now.saturating_sub(t) > keep {
                self.events.pop_front();
            } else {
                break;
            }
        }
    }

    /// Step 2: HPA's stabilization over the recommendation history: the
    /// minimum of the scale-up window and the maximum of the scale-down
    /// window, this recommendation included. Monotonic queues keep it O(1)
    /// amortized however often `decide` runs.
    fn stabilize(&mut self, now: Duration, current: u32, desired: u32) -> u32 {
        let up_w = self.config.scale_up.stabilization_window;
        let down_w = self.config.scale_down.stabilization_window;
        push_monotonic(&mut self.up_min, now, desired, up_w, |old, new| old >= new);
        push_monotonic(&mut self.down_max, now, desired, down_w, |old, new| {
            old <= new
        });
        let up = self.up_min.front().map_or(desired, |&(_, r)| r);
        let down = self.down_max.front().map_or(desired, |&(_, r)| r);
        current.max(up).min(down)
    }

    /// Replicas at the start of `period`: current minus the changes seen since.
    fn period_start(&self, now: Duration, current: u32, period: Duration) -> i64 {
        let changed: i64 = self
            .events
            .iter()
            .filter(|(t, _)| now.saturating_sub(*t) < period)
            .map(|(_, d)| d)
            .sum();
        i64::from(current) - changed
    }

    /// Step 3: HPA's rate rules.
    fn rate_limit(&self, now: Duration, current: u32, desired: u32) -> u32 {
        let clamp = |v: i64| v.clamp(0, i64::from(u32::MAX)) as u32;
        if desired > current {
            let rules = &self.config.scale_up;
            let limits = rules.rules.iter().map(|r| {
                let start = self.period_start(now, current, r.period).max(0);
                match r.kind {
                    HpaRuleKind::Pods => start + i64::from(r.value),
                    HpaRuleKind::Percent => i64::from(ceil_count(
                        start as f64 * (1.0 + f64::from(r.value) / 100.0),
                    )),
                }
            });
            let limit = match rules.select {
                SelectPolicy::Max => limits.max(),
                SelectPolicy::Min => limits.min(),
                SelectPolicy::Disabled => Some(i64::from(current)),
            }
            .unwrap_or(i64::from(current))
            .max(i64::from(current));
            desired.min(clamp(limit))
        } else if desired < current {
            let rules = &self.config.scale_down;
            let limits = rules.rules.iter().map(|r| {
                let start = self.period_start(now, current, r.period).max(0);
                match r.kind {
                    HpaRuleKind::Pods => start - i64::from(r.value),
                    HpaRuleKind::Percent => i64::from(floor_count(
                        start as f64 * (1.0 - f64::from(r.value) / 100.0),
                    )),
                }
            });
            let limit = match rules.select {
                SelectPolicy::Max => limits.min(),
                SelectPolicy::Min => limits.max(),
                SelectPolicy::Disabled => Some(i64::from(current)),
            }
            .unwrap_or(i64::from(current))
            .min(i64::from(current));
            desired.max(clamp(limit))
        } else {
            desired
        }
    }
}

/// Pushes `(now, rec)` onto a monotonic queue whose front is the extreme of
/// the recommendations younger than `window` (always including `rec`).
/// `dominated(old, new)` says when an older entry can never be the extreme again.
fn push_monotonic(
    queue: &mut VecDeque<(Duration, u32)>,
    now: Duration,
    rec: u32,
    window: Duration,
    dominated: impl Fn(u32, u32) -> bool,
) {
    while queue.back().is_some_and(|&(_, old)| dominated(old, rec)) {
        queue.pop_back();
    }
    queue.push_back((now, rec));
    while queue.front().is_some_and(|&(t, _)| {
        (now.saturating_sub(t) >= window && t != now) || queue.len() > HISTORY_CAP
    }) {
        queue.pop_front();
    }
}

impl Policy for Hpa {
    fn name(&self) -> &str {
        "hpa"
    }

    fn horizon(&self) -> Duration {
        self.config.look_back
    }

    fn decide(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        self.track_events(input.now, input.current);
        let rec = self.recommend(input);
        self.last = Some(LastDecision {
            at: input.now,
            current: input.current,
            recommended: rec.desired,
        });
        rec
    }
}

impl Hpa {
    /// Steps 1 to 3 for one decision.
    fn recommend(&mut self, input: &PolicyInput<'_>) -> Recommendation {
        let now = input.now;
        let current = input.current;
        if current == 0 {
            let load = input
                .window
                .mean(now, self.config.look_back, self.config.metric)
                .unwrap_or(0.0);
            let desired = u32::from(load > 0.0);
            return Recommendation::new(
                desired,
                Reason::new("scale_from_zero").with_values(load, 0.0),
            );
        }
        let (raw, reason) = match self.metric_replicas(input) {
            Ok(v) => v,
            Err(reason) => return Recommendation::new(current, reason),
        };
        let stabilized = self.stabilize(now, current, raw);
        let limited = self.rate_limit(now, current, stabilized);
        let kind = if limited != raw && limited == stabilized {
            "stabilized"
        } else if limited != stabilized {
            "step_limit"
        } else {
            reason.kind()
        };
        let reason = match (reason.observed(), reason.target()) {
            (Some(o), Some(t)) => Reason::new(kind).with_values(o, t),
            _ => Reason::new(kind),
        };
        Recommendation::new(limited, reason)
    }
}
