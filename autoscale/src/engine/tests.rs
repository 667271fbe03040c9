//! Engine rails, the async driver, and their invariants.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use proptest::prelude::*;
use tower::BoxError;

use super::*;
use crate::policy::{Policy, PolicyInput, Reason, Recommendation};
use crate::signal::LoadSample;
use crate::{ConfigErrorKind, TargetOngoing, TargetOngoingConfig};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A policy that recommends whatever the test sets.
#[derive(Debug, Clone)]
struct Fixed(Arc<Mutex<u32>>);

impl Fixed {
    fn new(n: u32) -> (Self, Arc<Mutex<u32>>) {
        let cell = Arc::new(Mutex::new(n));
        (Self(Arc::clone(&cell)), cell)
    }
}

impl Policy for Fixed {
    fn name(&self) -> &str {
        "fixed"
    }

    fn decide(&mut self, _input: &PolicyInput<'_>) -> Recommendation {
        Recommendation::new(*self.0.lock(), Reason::new("fixed"))
    }
}

fn engine(config: EngineConfig, n: u32) -> (Engine, Arc<Mutex<u32>>) {
    let (p, cell) = Fixed::new(n);
    (Engine::new(config, Box::new(p)).unwrap(), cell)
}

#[test]
fn bad_config_is_rejected() {
    let p = || Box::new(Fixed::new(1).0) as Box<dyn Policy>;
    let err =
        Engine::new(EngineConfig::default().min_replicas(5).max_replicas(2), p()).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::InvalidBounds);
    let err = Engine::new(EngineConfig::default().interval(Duration::ZERO), p()).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::ZeroDuration);
    assert!(Engine::new(EngineConfig::default().max_replicas(0).min_replicas(0), p()).is_err());
    assert!(Engine::new(EngineConfig::default().initial_replicas(Some(11)), p()).is_err());
    assert!(Engine::new(EngineConfig::default().max_step_up(Some(0)), p()).is_err());
    assert!(Engine::new(EngineConfig::default(), p()).is_ok());
}

#[test]
fn initial_replicas_first() {
    let (mut e, _) = engine(EngineConfig::default().initial_replicas(Some(3)), 1);
    let d = e.evaluate(s(0), ReplicaCounts::ready(0));
    assert_eq!((d.desired, d.reason.kind()), (3, "initial"));
    assert_eq!(d.recommended, 1);
}

#[test]
fn upscale_waits_for_the_delay_in_time_and_restarts_on_flip() {
    let cfg = EngineConfig::default().max_replicas(20);
    let (mut e, rec) = engine(cfg, 5);
    let c = ReplicaCounts::ready(2);
    for t in [0, 10, 29] {
        let d = e.evaluate(s(t), c);
        assert_eq!(
            (d.desired, d.reason.kind()),
            (2, "upscale_delay"),
            "t = {t}"
        );
    }
    // A dip resets the clock.
    *rec.lock() = 2;
    assert_eq!(e.evaluate(s(30), c).desired, 2);
    *rec.lock() = 5;
    assert_eq!(e.evaluate(s(31), c).desired, 2);
    assert_eq!(e.evaluate(s(60), c).desired, 2);
    let d = e.evaluate(s(61), c);
    assert_eq!((d.desired, d.reason.kind()), (5, "fixed"));
    // Sparse calls: the delay is time, not ticks.
    let (mut e, _) = engine(EngineConfig::default().max_replicas(20), 5);
    assert_eq!(e.evaluate(s(0), c).desired, 2);
    assert_eq!(e.evaluate(s(30), c).desired, 5);
}

#[test]
fn downscale_then_scale_to_zero_with_its_own_delay() {
    let cfg = EngineConfig::default()
        .min_replicas(0)
        .downscale_delay(s(60))
        .scale_to_zero_delay(Some(s(30)));
    let (mut e, _) = engine(cfg, 0);
    assert_eq!(
        e.evaluate(s(0), ReplicaCounts::ready(4)).reason.kind(),
        "downscale_delay"
    );
    assert_eq!(e.evaluate(s(59), ReplicaCounts::ready(4)).desired, 4);
    // First to one replica...
    assert_eq!(e.evaluate(s(60), ReplicaCounts::ready(4)).desired, 1);
    // ...then to zero once zero has been asked for 30 s (it has, since t = 0),
    // but the downscale delay restarts after the change.
    assert_eq!(e.evaluate(s(61), ReplicaCounts::ready(1)).desired, 1);
    assert_eq!(e.evaluate(s(121), ReplicaCounts::ready(1)).desired, 0);
    // From zero, scale-up is immediate.
    let cfg = EngineConfig::default().min_replicas(0).upscale_delay(s(30));
    let (mut e, _) = engine(cfg, 3);
    e.evaluate(s(0), ReplicaCounts::ready(0));
    assert_eq!(e.evaluate(s(1), ReplicaCounts::ready(0)).desired, 3);
}

#[test]
fn scale_to_zero_delay_counts_zero_recommendations() {
    let cfg = EngineConfig::default()
        .min_replicas(0)
        .no_delays()
        .scale_to_zero_delay(Some(s(30)));
    let (mut e, rec) = engine(cfg, 1);
    e.evaluate(s(0), ReplicaCounts::ready(1));
    *rec.lock() = 0;
    let d = e.evaluate(s(10), ReplicaCounts::ready(1));
    assert_eq!((d.desired, d.reason.kind()), (1, "scale_to_zero_delay"));
    assert_eq!(e.evaluate(s(39), ReplicaCounts::ready(1)).desired, 1);
    assert_eq!(e.evaluate(s(40), ReplicaCounts::ready(1)).desired, 0);
}

#[test]
fn bounds_always_win() {
    let cfg = EngineConfig::default().min_replicas(2).max_replicas(6);
    let (mut e, rec) = engine(cfg, 100);
    e.evaluate(s(0), ReplicaCounts::ready(2));
    let d = e.evaluate(s(40), ReplicaCounts::ready(2));
    assert_eq!((d.desired, d.reason.kind()), (6, "max_replicas"));
    // Outside the bounds: corrected at once, no delay.
    *rec.lock() = 0;
    let d = e.evaluate(s(41), ReplicaCounts::ready(9));
    assert_eq!((d.desired, d.reason.kind()), (6, "max_replicas"));
    let d = e.evaluate(s(42), ReplicaCounts::ready(0));
    assert_eq!((d.desired, d.reason.kind()), (2, "min_replicas"));
}

#[test]
fn step_limits_per_evaluation() {
    let cfg = EngineConfig::default()
        .max_replicas(50)
        .no_delays()
        .max_step_up(Some(3))
        .max_step_down(Some(2));
    let (mut e, rec) = engine(cfg, 20);
    e.evaluate(s(0), ReplicaCounts::ready(1));
    let d = e.evaluate(s(1), ReplicaCounts::ready(1));
    assert_eq!((d.desired, d.reason.kind()), (4, "step_limit"));
    *rec.lock() = 1;
    assert_eq!(e.evaluate(s(2), ReplicaCounts::ready(10)).desired, 8);
}

#[test]
fn downscale_stabilization_keeps_the_recent_max() {
    let cfg = EngineConfig::default()
        .no_delays()
        .downscale_stabilization(s(60));
    let (mut e, rec) = engine(cfg, 8);
    e.evaluate(s(0), ReplicaCounts::ready(8));
    *rec.lock() = 2;
    let d = e.evaluate(s(30), ReplicaCounts::ready(8));
    assert_eq!((d.desired, d.reason.kind()), (8, "stabilized"));
    assert_eq!(e.evaluate(s(59), ReplicaCounts::ready(8)).desired, 8);
    assert_eq!(e.evaluate(s(90), ReplicaCounts::ready(8)).desired, 2);
}

#[test]
fn no_scale_down_while_replicas_cold_start() {
    let cfg = EngineConfig::default()
        .no_delays()
        .cold_start_timeout(s(60));
    let (mut e, _) = engine(cfg, 1);
    e.evaluate(s(0), ReplicaCounts::new(5, 2));
    let d = e.evaluate(s(10), ReplicaCounts::new(5, 2));
    assert_eq!((d.desired, d.reason.kind()), (5, "cold_start_hold"));
    // Starting for longer than the timeout: no longer protected.
    assert_eq!(e.evaluate(s(61), ReplicaCounts::new(5, 2)).desired, 1);
    // Once ready, scale-down proceeds.
    let (mut e, _) = engine(EngineConfig::default().no_delays(), 1);
    e.evaluate(s(0), ReplicaCounts::new(5, 2));
    assert_eq!(e.evaluate(s(1), ReplicaCounts::ready(5)).desired, 1);
}

#[test]
fn missing_and_nan_samples_hold() {
    let policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    let mut e = Engine::new(
        EngineConfig::default().no_delays().max_replicas(100),
        Box::new(policy),
    )
    .unwrap();
    for t in 0..100 {
        assert!(!e.record(s(t), LoadSample::ongoing(f64::NAN)));
        let d = e.evaluate(s(t), ReplicaCounts::ready(3));
        assert_eq!((d.desired, d.reason.kind()), (3, "no_metrics"));
    }
    // A replica stops reporting: once its last sample leaves the look-back, hold.
    e.record(s(100), LoadSample::ongoing(60.0));
    assert_eq!(e.evaluate(s(100), ReplicaCounts::ready(3)).desired, 30);
    assert_eq!(e.evaluate(s(200), ReplicaCounts::ready(30)).desired, 30);
}

// ---- properties ----

#[derive(Debug, Clone)]
struct Scenario {
    min: u32,
    max: u32,
    up: u64,
    down: u64,
    steps: Vec<(f64, u64)>,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (0u32..5, 1u32..30, 0u64..60, 0u64..120)
        .prop_flat_map(|(min, span, up, down)| {
            let steps = prop::collection::vec(
                (
                    prop_oneof![Just(f64::NAN), Just(-1.0), 0.0f64..200.0],
                    1u64..20,
                ),
                1..150,
            );
            (Just(min), Just(min + span), Just(up), Just(down), steps)
        })
        .prop_map(|(min, max, up, down, steps)| Scenario {
            min,
            max,
            up,
            down,
            steps,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Desired is always within bounds, and a direction change never comes
    /// sooner than the delay of the new direction.
    #[test]
    fn engine_respects_bounds_and_delays(sc in scenario()) {
        let cfg = EngineConfig::default()
            .min_replicas(sc.min)
            .max_replicas(sc.max)
            .upscale_delay(s(sc.up))
            .downscale_delay(s(sc.down));
        let policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
        let mut e = Engine::new(cfg, Box::new(policy)).unwrap();
        let mut now = Duration::ZERO;
        let mut current = sc.min;
        let mut last_change: Option<(std::cmp::Ordering, Duration)> = None;
        for (load, dt) in &sc.steps {
            e.record(now, LoadSample::ongoing(*load));
            let d = e.evaluate(now, ReplicaCounts::ready(current));
            prop_assert!(d.desired >= sc.min && d.desired <= sc.max, "{d:?}");
            if d.changed() {
                let dir = d.direction();
                if let Some((prev_dir, at)) = last_change {
                    if prev_dir != dir && current > 0 && d.reason.kind() != "initial" {
                        let delay = if dir == std::cmp::Ordering::Greater { sc.up } else { sc.down };
                        prop_assert!(now - at >= s(delay), "flip after {:?} < {delay}s: {d:?}", now - at);
                    }
                }
                last_change = Some((dir, now));
                current = d.desired;
            }
            now += s(*dt);
        }
    }
}

// ---- the async driver ----

#[derive(Debug, Default)]
struct RecordingScaler {
    counts: Mutex<ReplicaCounts>,
    calls: Mutex<Vec<(Duration, u32)>>,
}

impl Scaler for RecordingScaler {
    fn replicas(&self) -> ReplicaCounts {
        *self.counts.lock()
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            *self.counts.lock() = ReplicaCounts::ready(n);
            self.calls
                .lock()
                .push((tokio::time::Instant::now().elapsed(), n));
            Ok(())
        })
    }
}

#[tokio::test(start_paused = true)]
async fn driver_ticks_on_the_tokio_clock_and_scales() {
    let policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    let cfg = EngineConfig::default()
        .name("test")
        .initial_replicas(Some(2))
        .upscale_delay(s(5))
        .interval(s(1));
    let engine = Engine::new(cfg, Box::new(policy)).unwrap();
    let scaler = Arc::new(RecordingScaler::default());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let seen2 = Arc::clone(&seen);
    let autoscaler = Autoscaler::new(engine, Arc::clone(&scaler))
        .with_source(|_now: Duration| Some(LoadSample::ongoing(10.0)))
        .on_decision(move |d: &ScaleDecision| seen2.lock().push(d.desired));
    let handle = autoscaler.handle();
    let mut decisions = handle.decisions();
    let task = tokio::spawn(autoscaler.run());

    // The first tick applies the initial count.
    decisions.changed().await.unwrap();
    assert_eq!(handle.last_decision().unwrap().desired, 2);
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(2));

    // 10 ongoing at target 2 → 5 replicas after the 5 s upscale delay.
    tokio::time::sleep(s(4)).await;
    assert_eq!(scaler.replicas().current, 2);
    tokio::time::sleep(s(3)).await;
    assert_eq!(
        scaler.replicas().current,
        5,
        "{:?} {:?}",
        seen.lock(),
        handle.last_decision()
    );
    assert_eq!(handle.last_decision().unwrap().desired, 5);
    assert!(seen.lock().len() >= 7);
    assert!(handle.record(LoadSample::ongoing(1.0)));

    handle.shutdown();
    task.await.unwrap();
    assert_eq!(
        scaler
            .calls
            .lock()
            .iter()
            .map(|(_, n)| *n)
            .collect::<Vec<_>>(),
        vec![2, 5]
    );
}

#[tokio::test(start_paused = true)]
async fn driver_survives_scaler_errors() {
    #[derive(Debug)]
    struct Failing;
    impl Scaler for Failing {
        fn replicas(&self) -> ReplicaCounts {
            ReplicaCounts::ready(1)
        }
        fn scale_to(&self, _n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
            Box::pin(async { Err("no capacity".into()) })
        }
    }
    let (p, _) = Fixed::new(4);
    let engine = Engine::new(EngineConfig::default().no_delays(), Box::new(p)).unwrap();
    let mut autoscaler = Autoscaler::new(engine, Failing);
    for _ in 0..3 {
        let d = autoscaler.tick().await;
        assert_eq!((d.current, d.desired), (1, 4));
        tokio::time::advance(s(1)).await;
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Scale-down stabilization never goes below the highest recommendation
    /// of its window (or the current count, if lower).
    #[test]
    fn stabilization_keeps_the_window_max(
        steps in prop::collection::vec((1u32..40, 1u64..30), 1..200),
        window in 1u64..120,
    ) {
        let cfg = EngineConfig::default()
            .max_replicas(40)
            .no_delays()
            .downscale_stabilization(s(window));
        let (mut e, rec) = engine(cfg, 1);
        let mut now = Duration::ZERO;
        let mut current = 1;
        let mut seen: Vec<(Duration, u32)> = Vec::new();
        for (r, dt) in steps {
            *rec.lock() = r;
            seen.push((now, r));
            let d = e.evaluate(now, ReplicaCounts::ready(current));
            if d.reason.kind() != "initial" && d.desired < current {
                let window_max = seen
                    .iter()
                    .filter(|(t, _)| now - *t < s(window))
                    .map(|(_, r)| *r)
                    .max()
                    .unwrap();
                prop_assert_eq!(d.desired, window_max.min(current));
            }
            current = d.desired;
            now += s(dt);
        }
    }
}

#[test]
fn configs_round_trip_through_serde() {
    fn round_trip<T>(value: &T)
    where
        T: serde::Serialize + serde::de::DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let json = serde_json::to_string(value).unwrap();
        let back: T = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, value, "{json}");
    }
    round_trip(
        &EngineConfig::default()
            .min_replicas(0)
            .scale_to_zero_delay(Some(s(30))),
    );
    round_trip(&crate::TargetOngoingConfig::default());
    round_trip(&crate::HpaConfig::default());
    round_trip(&crate::KpaConfig::default());
    round_trip(&crate::LatencySloConfig::default().max_ongoing_per_replica(Some(4.0)));
    round_trip(
        &crate::QueueModelConfig::default().cost(Some(crate::BatchCost::new(
            Duration::from_millis(10),
            Duration::from_millis(1),
        ))),
    );
    round_trip(&crate::ReplicaSetConfig::default());
    // Missing fields take their defaults.
    let partial: EngineConfig = serde_json::from_str(r#"{"max_replicas": 3}"#).unwrap();
    assert_eq!(partial, EngineConfig::default().max_replicas(3));
}

/// Every tick publishes the bounds beside the counts, so a dashboard and an
/// alert can tell a deployment stuck at its maximum.
#[test]
fn ticks_publish_the_replica_bounds() {
    use metrics_util::debugging::{DebugValue, DebuggingRecorder};
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
            let cfg = EngineConfig::default()
                .name("bounds")
                .min_replicas(2)
                .max_replicas(7);
            let engine = Engine::new(cfg, Box::new(policy)).unwrap();
            let mut autoscaler = Autoscaler::new(engine, Arc::new(RecordingScaler::default()));
            autoscaler.tick().await;
        });
    });
    let snapshot = snapshotter.snapshot().into_vec();
    let gauge = |name: &str| {
        snapshot
            .iter()
            .find(|(key, ..)| {
                key.key().name() == name
                    && key
                        .key()
                        .labels()
                        .any(|l| l.key() == "deployment" && l.value() == "bounds")
            })
            .map(|(.., value)| match value {
                DebugValue::Gauge(v) => v.into_inner(),
                other => panic!("{name} is not a gauge: {other:?}"),
            })
    };
    assert_eq!(gauge("convoy_autoscale_min_replicas"), Some(2.0));
    assert_eq!(gauge("convoy_autoscale_max_replicas"), Some(7.0));
}
