//! Rollout state machine under paused time.

use std::sync::Arc;
use std::time::Duration;

use convoy_router::rollout::{
    LatencyCheck, LatencyLimit, Rollout, RolloutConfig, RolloutEvent, RolloutEventKind,
    RolloutState, RolloutTarget,
};
use convoy_router::{BackendSnapshot, Split};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tower::{service_fn, BoxError, ServiceExt};

/// A target whose statistics the test scripts.
#[derive(Clone)]
struct Fake {
    state: Arc<Mutex<FakeState>>,
}

struct FakeState {
    percents: Vec<f64>,
    canary: BackendSnapshot,
    stable: BackendSnapshot,
}

impl Fake {
    fn new() -> Self {
        Self {
            state: Arc::new(Mutex::new(FakeState {
                percents: Vec::new(),
                canary: BackendSnapshot::empty("canary"),
                stable: BackendSnapshot::empty("stable"),
            })),
        }
    }

    fn feed(&self, canary: bool, ok: u64, errors: u64, latency: Duration) {
        let mut s = self.state.lock();
        let b = if canary { &mut s.canary } else { &mut s.stable };
        b.requests += ok + errors;
        b.errors += errors;
        b.completed += ok + errors;
        for _ in 0..ok + errors {
            b.latency.record(latency);
        }
    }

    /// Every second: `per_sec` canary requests with `errors` errors at
    /// `canary_latency`, and 100 stable requests at 10 ms.
    fn feeder(&self, per_sec: u64, errors: u64, canary_latency: Duration) -> JoinHandle<()> {
        let fake = self.clone();
        tokio::spawn(async move {
            loop {
                fake.feed(true, per_sec - errors, errors, canary_latency);
                fake.feed(false, 100, 0, Duration::from_millis(10));
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        })
    }

    fn percents(&self) -> Vec<f64> {
        self.state.lock().percents.clone()
    }
}

impl RolloutTarget for Fake {
    fn set_canary_percent(&self, _: &str, _: &str, percent: f64) -> Result<(), BoxError> {
        self.state.lock().percents.push(percent);
        Ok(())
    }

    fn snapshot(&self, backend: &str) -> Option<BackendSnapshot> {
        let s = self.state.lock();
        Some(if backend == "canary" {
            s.canary.clone()
        } else {
            s.stable.clone()
        })
    }
}

fn config() -> RolloutConfig {
    RolloutConfig {
        steps: vec![10.0, 50.0],
        min_step_duration: Duration::from_secs(30),
        analysis_interval: Duration::from_secs(10),
        min_samples: 50,
        max_error_rate: 0.1,
        latency: Some(LatencyCheck {
            quantile: 0.99,
            limit: LatencyLimit::Absolute(Duration::from_millis(100)),
        }),
        failure_limit: 2,
        rollback_steps: 4,
        rollback_interval: Duration::from_secs(5),
        ..RolloutConfig::default()
    }
}

fn drain(rx: &mut broadcast::Receiver<RolloutEvent>) -> Vec<RolloutEvent> {
    let mut out = Vec::new();
    while let Ok(e) = rx.try_recv() {
        out.push(e);
    }
    out
}

fn kinds(events: &[RolloutEvent]) -> Vec<RolloutEventKind> {
    events.iter().map(|e| e.kind).collect()
}

#[tokio::test(start_paused = true)]
async fn promotes_step_by_step_on_good_analysis() {
    let fake = Fake::new();
    let rollout = Rollout::new(fake.clone(), config()).unwrap();
    let mut events = rollout.subscribe();
    let start = tokio::time::Instant::now();
    let feeder = fake.feeder(10, 0, Duration::from_millis(20));
    let handle = rollout.start();
    assert_eq!(handle.finished().await, RolloutState::Promoted);
    feeder.abort();
    use RolloutEventKind::*;
    let events = drain(&mut events);
    assert_eq!(
        kinds(&events),
        vec![
            StepStarted,
            AnalysisPassed,
            StepStarted,
            AnalysisPassed,
            Promoted
        ]
    );
    assert_eq!(fake.percents(), vec![10.0, 50.0, 100.0]);
    // Each step lasted at least its minimum duration.
    assert!(events[2].at - start >= Duration::from_secs(30));
    assert!(events[4].at - events[2].at >= Duration::from_secs(30));
    assert!(
        events[1].reason.contains("error rate"),
        "{}",
        events[1].reason
    );
}

#[tokio::test(start_paused = true)]
async fn rolls_back_in_ramped_steps_after_the_failure_limit() {
    let fake = Fake::new();
    let rollout = Rollout::new(
        fake.clone(),
        RolloutConfig {
            steps: vec![20.0, 100.0],
            ..config()
        },
    )
    .unwrap();
    let mut events = rollout.subscribe();
    let feeder = fake.feeder(10, 3, Duration::from_millis(20));
    let handle = rollout.start();
    assert_eq!(handle.finished().await, RolloutState::RolledBack);
    feeder.abort();
    use RolloutEventKind::*;
    let events = drain(&mut events);
    assert_eq!(
        kinds(&events),
        vec![
            StepStarted,
            AnalysisFailed,
            AnalysisFailed,
            RollbackStarted,
            RollbackStep,
            RollbackStep,
            RollbackStep,
            RollbackStep,
            RolledBack
        ]
    );
    assert!(
        events[1].reason.contains("error rate 30.00% > 10.00%"),
        "{}",
        events[1].reason
    );
    // No cliff: 20 -> 15 -> 10 -> 5 -> 0, 5 s apart.
    assert_eq!(fake.percents(), vec![20.0, 15.0, 10.0, 5.0, 0.0]);
    for pair in events[4..8].windows(2) {
        assert_eq!(pair[1].at - pair[0].at, Duration::from_secs(5));
    }
}

#[tokio::test(start_paused = true)]
async fn no_verdict_below_the_minimum_sample_count() {
    let fake = Fake::new();
    let rollout = Rollout::new(
        fake.clone(),
        RolloutConfig {
            min_samples: 10_000,
            failure_limit: 1,
            ..config()
        },
    )
    .unwrap();
    let mut events = rollout.subscribe();
    // Every canary request fails, but there are too few to judge.
    let feeder = fake.feeder(2, 2, Duration::from_millis(20));
    let handle = rollout.start();
    tokio::time::sleep(Duration::from_secs(3_000)).await;
    assert_eq!(
        handle.state(),
        RolloutState::Progressing {
            step: 0,
            canary_percent: 10.0
        }
    );
    assert_eq!(
        kinds(&drain(&mut events)),
        vec![RolloutEventKind::StepStarted, RolloutEventKind::Waiting]
    );
    // Once enough samples exist, the verdict comes.
    tokio::time::sleep(Duration::from_secs(3_000)).await;
    assert!(matches!(
        handle.state(),
        RolloutState::RollingBack { .. } | RolloutState::RolledBack
    ));
    feeder.abort();
}

#[tokio::test(start_paused = true)]
async fn latency_is_judged_against_the_stable_version() {
    let fake = Fake::new();
    let cfg = RolloutConfig {
        latency: Some(LatencyCheck {
            quantile: 0.99,
            limit: LatencyLimit::StableFactor(1.5),
        }),
        failure_limit: 1,
        ..config()
    };
    let rollout = Rollout::new(fake.clone(), cfg).unwrap();
    let mut events = rollout.subscribe();
    // Stable runs at 10 ms; the canary at 40 ms > 15 ms.
    let feeder = fake.feeder(10, 0, Duration::from_millis(40));
    let handle = rollout.start();
    assert_eq!(handle.finished().await, RolloutState::RolledBack);
    feeder.abort();
    let failed = drain(&mut events)
        .into_iter()
        .find(|e| e.kind == RolloutEventKind::AnalysisFailed)
        .unwrap();
    assert!(failed.reason.contains("latency"), "{}", failed.reason);
}

#[tokio::test(start_paused = true)]
async fn pause_resume_abort_and_promote() {
    // Pause holds the step; resume continues; abort ramps down.
    let fake = Fake::new();
    let rollout = Rollout::new(fake.clone(), config()).unwrap();
    let mut events = rollout.subscribe();
    let feeder = fake.feeder(10, 0, Duration::from_millis(20));
    let handle = rollout.start();
    tokio::task::yield_now().await;
    handle.pause().await.unwrap();
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert_eq!(
        handle.state(),
        RolloutState::Paused {
            step: 0,
            canary_percent: 10.0
        }
    );
    assert_eq!(fake.percents(), vec![10.0]);
    handle.resume().await.unwrap();
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert_eq!(
        handle.state(),
        RolloutState::Progressing {
            step: 1,
            canary_percent: 50.0
        }
    );
    handle.abort("operator saw a bad dashboard").await.unwrap();
    assert_eq!(handle.finished().await, RolloutState::RolledBack);
    assert_eq!(fake.percents(), vec![10.0, 50.0, 37.5, 25.0, 12.5, 0.0]);
    let events = drain(&mut events);
    let started = events
        .iter()
        .find(|e| e.kind == RolloutEventKind::RollbackStarted)
        .unwrap();
    assert!(started.reason.contains("operator saw a bad dashboard"));
    assert!(events.iter().any(|e| e.kind == RolloutEventKind::Paused));
    assert!(events.iter().any(|e| e.kind == RolloutEventKind::Resumed));
    assert!(handle.pause().await.is_err(), "commands fail once finished");
    feeder.abort();

    // Manual promotion skips the remaining steps.
    let fake = Fake::new();
    let handle = Rollout::new(fake.clone(), config()).unwrap().start();
    handle.promote().await.unwrap();
    assert_eq!(handle.finished().await, RolloutState::Promoted);
    assert_eq!(fake.percents(), vec![10.0, 100.0]);
}

#[test]
fn invalid_rollout_config_is_rejected() {
    for cfg in [
        RolloutConfig {
            steps: vec![],
            ..config()
        },
        RolloutConfig {
            steps: vec![10.0, 5.0],
            ..config()
        },
        RolloutConfig {
            steps: vec![0.0],
            ..config()
        },
        RolloutConfig {
            steps: vec![150.0],
            ..config()
        },
        RolloutConfig {
            max_error_rate: 2.0,
            ..config()
        },
        RolloutConfig {
            min_samples: 0,
            ..config()
        },
        RolloutConfig {
            rollback_steps: 0,
            ..config()
        },
        RolloutConfig {
            canary: "stable".into(),
            ..config()
        },
        RolloutConfig {
            analysis_interval: Duration::MAX,
            ..config()
        },
    ] {
        assert!(Rollout::new(Fake::new(), cfg).is_err());
    }
}

#[tokio::test(start_paused = true)]
async fn end_to_end_with_a_split_rolls_back_a_failing_canary() {
    let version = |fail: bool| {
        service_fn(move |x: u32| async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            if fail && x.is_multiple_of(2) {
                Err::<u32, BoxError>("v2 is broken".into())
            } else {
                Ok(x)
            }
        })
    };
    let (split, handle) = Split::builder()
        .backend("v1", version(false), 100.0)
        .backend("v2", version(true), 0.0)
        .build()
        .unwrap();
    let cfg = RolloutConfig {
        stable: "v1".into(),
        canary: "v2".into(),
        steps: vec![25.0, 100.0],
        min_samples: 20,
        ..config()
    };
    let rollout = Rollout::new(handle.clone(), cfg).unwrap().start();
    let traffic = tokio::spawn(async move {
        for x in 0.. {
            let _ = split.clone().oneshot(x).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    assert_eq!(rollout.finished().await, RolloutState::RolledBack);
    traffic.abort();
    assert_eq!(
        handle.weights(),
        vec![("v1".into(), 100.0), ("v2".into(), 0.0)]
    );
    let v2 = handle.backend("v2").unwrap();
    assert!(v2.error_rate() > 0.4, "{}", v2.error_rate());
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Promote iff the canary's error rate is within the threshold; never a
    /// verdict without enough samples.
    #[test]
    fn verdict_follows_the_error_rate(errors in 0u64..=20, per_sec_enough in any::<bool>()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let fake = Fake::new();
            let min_samples = if per_sec_enough { 50 } else { 1_000_000 };
            let handle = Rollout::new(fake.clone(), RolloutConfig { min_samples, latency: None, ..config() })
                .unwrap()
                .start();
            let feeder = fake.feeder(20, errors, Duration::from_millis(1));
            tokio::time::sleep(Duration::from_secs(600)).await;
            let state = handle.state();
            feeder.abort();
            if !per_sec_enough {
                prop_assert_eq!(state, RolloutState::Progressing { step: 0, canary_percent: 10.0 });
            } else if errors as f64 / 20.0 <= 0.1 {
                prop_assert_eq!(state, RolloutState::Promoted);
            } else {
                prop_assert_eq!(state, RolloutState::RolledBack);
                prop_assert_eq!(fake.percents(), vec![10.0, 7.5, 5.0, 2.5, 0.0]);
            }
            Ok(())
        })?;
    }
}
