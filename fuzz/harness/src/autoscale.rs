//! convoy-autoscale's engine driven by signal sequences, for every built-in
//! policy and random guard rails: samples with any values (NaN, infinite,
//! negative, huge), irregular evaluation times, and replica counts that lag
//! or disagree with the last decision. After every evaluation:
//! - the desired count lies within `[min_replicas, max_replicas]`;
//! - a change never exceeds the per-evaluation step limits (when the
//!   current count lies within the bounds);
//! - a change of direction never comes sooner than the new direction's
//!   delay after the previous change;
//! - invalid samples are refused by `record`.

use std::cmp::Ordering;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use convoy_autoscale::{
    Engine, EngineConfig, Hpa, HpaConfig, Kpa, KpaConfig, LatencySlo, LatencySloConfig, LoadSample,
    Policy, QueueModel, QueueModelConfig, ReplicaCounts, TargetOngoing, TargetOngoingConfig,
};

#[derive(Debug, Arbitrary)]
struct Sample {
    ongoing: f64,
    queued: f64,
    arrivals: u32,
    completions: u32,
    p99_ms: Option<u32>,
    batches: u16,
    batch_items: u16,
    batch_busy_ms: u32,
    reporting: Option<u8>,
}

#[derive(Debug, Arbitrary)]
struct Step {
    sample: Option<Sample>,
    dt_ms: u16,
    /// The scaler applies the last decision (else it lags behind).
    apply: bool,
    ready_lag: u8,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    policy: u8,
    min: u8,
    max: u8,
    up_s: u8,
    down_s: u8,
    step_up: Option<u8>,
    step_down: Option<u8>,
    hold_down: bool,
    steps: Vec<Step>,
}

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(s) = Setup::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let policy: Box<dyn Policy> = match s.policy % 5 {
        0 => Box::new(TargetOngoing::new(TargetOngoingConfig::default()).expect("default")),
        1 => Box::new(Hpa::new(HpaConfig::default()).expect("default")),
        2 => Box::new(Kpa::new(KpaConfig::default()).expect("default")),
        3 => Box::new(LatencySlo::new(LatencySloConfig::default()).expect("default")),
        _ => Box::new(QueueModel::new(QueueModelConfig::default()).expect("default")),
    };
    let min = u32::from(s.min % 4);
    let max = (min + u32::from(s.max % 20)).max(1);
    let (up, down) = (
        Duration::from_secs(u64::from(s.up_s % 40)),
        Duration::from_secs(u64::from(s.down_s % 120)),
    );
    let step_up = s.step_up.map(|n| u32::from(n % 5) + 1);
    let step_down = s.step_down.map(|n| u32::from(n % 5) + 1);
    let cfg = EngineConfig::default()
        .min_replicas(min)
        .max_replicas(max)
        .upscale_delay(up)
        .downscale_delay(down)
        .max_step_up(step_up)
        .max_step_down(step_down)
        .hold_down_while_starting(s.hold_down);
    let mut engine = Engine::new(cfg, policy).expect("a valid configuration");
    let mut now = Duration::ZERO;
    let mut current = engine.config().initial();
    let mut ready = current;
    let mut last_change: Option<(Ordering, Duration)> = None;
    for step in s.steps.iter().take(400) {
        if let Some(x) = &step.sample {
            let sample = LoadSample {
                ongoing: x.ongoing,
                queued: x.queued,
                running: (x.ongoing - x.queued).max(0.0),
                arrivals: x.arrivals.into(),
                completions: x.completions.into(),
                latency_p50: x.p99_ms.map(|ms| Duration::from_millis(u64::from(ms) / 2)),
                latency_p90: x
                    .p99_ms
                    .map(|ms| Duration::from_millis(u64::from(ms) * 9 / 10)),
                latency_p99: x.p99_ms.map(|ms| Duration::from_millis(ms.into())),
                queue_wait: None,
                batches: x.batches.into(),
                batch_items: x.batch_items.into(),
                batch_busy: Duration::from_millis(x.batch_busy_ms.into()),
                replicas_reporting: x.reporting.map(u32::from),
            };
            let valid = sample.is_valid();
            let taken = engine.record(now, sample);
            assert!(valid || !taken, "an invalid sample was recorded");
        }
        let d = engine.evaluate(now, ReplicaCounts::new(current, ready));
        assert!(
            d.desired >= min && d.desired <= max,
            "desired {} outside [{min}, {max}]: {d:?}",
            d.desired
        );
        let in_bounds = current >= min && current <= max;
        if in_bounds && d.reason.kind() != "initial" {
            if let Some(n) = step_up {
                assert!(d.desired <= current + n, "step up above {n}: {d:?}");
            }
            if let Some(n) = step_down {
                assert!(d.desired + n >= current, "step down above {n}: {d:?}");
            }
        }
        if d.changed() {
            let dir = d.direction();
            if let Some((prev, at)) = last_change {
                if prev != dir && current > 0 && in_bounds && d.reason.kind() != "initial" {
                    let delay = if dir == Ordering::Greater { up } else { down };
                    assert!(
                        now - at >= delay,
                        "direction flipped after {:?} < {delay:?}: {d:?}",
                        now - at
                    );
                }
            }
            if step.apply {
                last_change = Some((dir, now));
                current = d.desired;
            }
        }
        ready = current.saturating_sub(u32::from(step.ready_lag % 3));
        now += Duration::from_millis(u64::from(step.dt_ms) * 10);
    }
}
