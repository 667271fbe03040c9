//! The rollout's prediction-drift check, fed by a shadow, under paused time.

use std::time::Duration;

use convoy_router::rollout::drift::{
    ks_statistic, psi, DriftCompare, DriftConfig, DriftMonitor, Embedding, Logits,
};
use convoy_router::rollout::{
    Rollout, RolloutConfig, RolloutEvent, RolloutEventKind, RolloutHandle, RolloutState,
};
use convoy_router::shadow::{ShadowConfig, ShadowLayer};
use convoy_router::{Split, SplitHandle};
use proptest::prelude::*;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tower::util::BoxCloneService;
use tower::{service_fn, BoxError, Layer, ServiceExt};

type Svc = BoxCloneService<u32, Vec<f32>, BoxError>;

/// A 10-class classifier's logits: class `c` wins clearly.
fn logits(c: u32) -> Vec<f32> {
    let mut v = vec![0.0; 10];
    v[(c % 10) as usize] = 3.0;
    v
}

/// The stable model: class `x % 10`.
fn stable() -> Svc {
    BoxCloneService::new(service_fn(
        |x: u32| async move { Ok::<_, BoxError>(logits(x)) },
    ))
}

/// A candidate answering like `model(x)`, every canary request mirrored to
/// the stable model and both outputs compared.
fn canary(model: fn(u32) -> Vec<f32>, drift: &DriftMonitor) -> Svc {
    let candidate = service_fn(move |x: u32| async move { Ok::<_, BoxError>(model(x)) });
    let layer = ShadowLayer::new(
        stable(),
        ShadowConfig {
            fraction: 1.0,
            max_in_flight: 64,
            ..ShadowConfig::default()
        },
    )
    .unwrap()
    .compare(
        DriftCompare::new(drift.clone(), |r: &Vec<f32>| Logits(r.clone())).primary_is_canary(),
    );
    BoxCloneService::new(layer.layer(candidate))
}

fn rollout_config() -> RolloutConfig {
    RolloutConfig {
        steps: vec![10.0, 50.0],
        min_step_duration: Duration::from_secs(5),
        analysis_interval: Duration::from_secs(1),
        min_samples: 20,
        latency: None,
        failure_limit: 2,
        rollback_steps: 2,
        rollback_interval: Duration::from_secs(1),
        ..RolloutConfig::default()
    }
}

struct Run {
    handle: RolloutHandle,
    weights: SplitHandle<Svc>,
    events: broadcast::Receiver<RolloutEvent>,
    traffic: JoinHandle<()>,
}

/// Starts a rollout of `canary` with the drift check and 100 requests/s.
fn start(canary: Svc, drift: DriftMonitor) -> Run {
    let (split, weights) = Split::builder()
        .backend("stable", stable(), 100.0)
        .backend("canary", canary, 0.0)
        .build()
        .unwrap();
    let rollout = Rollout::new(weights.clone(), rollout_config())
        .unwrap()
        .drift(drift);
    let events = rollout.subscribe();
    let handle = rollout.start();
    let traffic = tokio::spawn(async move {
        for x in 0u32.. {
            let _ = split.clone().oneshot(x).await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    });
    Run {
        handle,
        weights,
        events,
        traffic,
    }
}

fn drained(rx: &mut broadcast::Receiver<RolloutEvent>) -> Vec<RolloutEvent> {
    std::iter::from_fn(|| rx.try_recv().ok()).collect()
}

fn classifier_drift(min_pairs: u64) -> DriftMonitor {
    DriftMonitor::new(DriftConfig {
        min_pairs,
        min_top1_agreement: Some(0.95),
        max_psi: Some(0.2),
        max_ks: Some(0.2),
        ..DriftConfig::default()
    })
    .unwrap()
}

/// Waits for the rollout to end in `state` with the canary at `percent`;
/// returns every event and those of `kind`.
async fn finish(
    mut run: Run,
    state: RolloutState,
    percent: f64,
    kind: RolloutEventKind,
) -> (Vec<RolloutEvent>, Vec<RolloutEvent>) {
    let end = tokio::time::timeout(Duration::from_secs(120), run.handle.finished())
        .await
        .expect("rollout finishes");
    run.traffic.abort();
    assert_eq!(end, state);
    assert_eq!(run.weights.weights()[1], ("canary".to_owned(), percent));
    let events = drained(&mut run.events);
    let of_kind = events.iter().filter(|e| e.kind == kind).cloned().collect();
    (events, of_kind)
}

#[tokio::test(start_paused = true)]
async fn same_output_canary_is_promoted() {
    let drift = classifier_drift(40);
    let run = start(canary(logits, &drift), drift);
    let (events, passed) = finish(
        run,
        RolloutState::Promoted,
        100.0,
        RolloutEventKind::AnalysisPassed,
    )
    .await;
    assert_eq!(passed.len(), 2, "{events:#?}");
    for e in passed {
        assert!(
            e.reason
                .contains("drift: top-1 agreement 1.000 >= 0.95 over"),
            "{}",
            e.reason
        );
    }
    assert!(!events
        .iter()
        .any(|e| e.kind == RolloutEventKind::AnalysisFailed));
}

/// Same shapes, no errors, same latency; a third of the answers differ.
fn drifting(x: u32) -> Vec<f32> {
    logits(if x.is_multiple_of(3) { x + 1 } else { x })
}

#[tokio::test(start_paused = true)]
async fn drifting_canary_is_rolled_back_by_the_drift_check() {
    let drift = classifier_drift(40);
    let run = start(canary(drifting, &drift), drift);
    let (events, failed) = finish(
        run,
        RolloutState::RolledBack,
        0.0,
        RolloutEventKind::AnalysisFailed,
    )
    .await;
    assert_eq!(failed.len(), 2, "{events:#?}");
    let rolled_back = events.last().unwrap();
    assert_eq!(rolled_back.kind, RolloutEventKind::RolledBack);
    // The figure that stopped the canary is in the reason.
    let reason = &rolled_back.reason;
    eprintln!("rolled back: {reason}");
    assert!(
        reason.contains("drift: top-1 agreement 0.6") && reason.contains("< 0.95 over"),
        "{reason}"
    );
    // Error rate was fine: only the drift check failed.
    assert!(failed.iter().all(|e| e.reason.starts_with("drift: ")));
    // It never left the first step.
    assert!(events.iter().all(|e| e.step == 0), "{events:#?}");
}

#[tokio::test(start_paused = true)]
async fn too_few_pairs_do_not_decide() {
    let drift = classifier_drift(10_000);
    let mut run = start(canary(drifting, &drift), drift.clone());
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(
        run.handle.state(),
        RolloutState::Progressing {
            step: 0,
            canary_percent: 10.0
        }
    );
    let events = drained(&mut run.events);
    assert!(
        events.iter().any(|e| e.kind == RolloutEventKind::Waiting
            && e.reason.contains("drift: ")
            && e.reason
                .contains("of 10000 pairs needed for top-1 agreement")),
        "{events:#?}"
    );
    assert!(events.iter().all(|e| !matches!(
        e.kind,
        RolloutEventKind::AnalysisPassed | RolloutEventKind::AnalysisFailed
    )));
    // The pairs were collected, just not enough of them.
    let report = drift.report();
    assert!(report.pairs > 40, "{report:?}");
    assert!(report.top1_agreement.unwrap() < 0.95);
    run.traffic.abort();
}

#[test]
fn encoder_and_score_checks_report_their_figures() {
    let drift = DriftMonitor::new(DriftConfig {
        min_pairs: 100,
        max_ks: Some(0.2),
        ..DriftConfig::encoder()
    })
    .unwrap();
    for i in 0..100u16 {
        let a = f32::from(i);
        drift.record(&Embedding(vec![1.0, a]), &Embedding(vec![1.0, a]));
    }
    let r = drift.report();
    assert_eq!(r.cosine_pairs, 100);
    assert!((r.mean_cosine.unwrap() - 1.0).abs() < 1e-9);
    drift.reset();
    for _ in 0..100 {
        drift.record(&Embedding(vec![1.0, 0.0]), &Embedding(vec![0.0, 1.0]));
    }
    assert!(drift.report().mean_cosine.unwrap().abs() < 1e-9);
}

fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(
        prop_oneof![-1e6..1e6f64, (0..5i32).prop_map(f64::from)],
        1..200,
    )
}

proptest! {
    #[test]
    fn ks_is_a_distance_in_unit_interval(a in sample(), b in sample()) {
        let d = ks_statistic(&a, &b);
        prop_assert!((0.0..=1.0).contains(&d), "{d}");
        prop_assert_eq!(d, ks_statistic(&b, &a));
        prop_assert_eq!(ks_statistic(&a, &a), 0.0);
        let mut shuffled = a.clone();
        shuffled.reverse();
        prop_assert_eq!(ks_statistic(&a, &shuffled), 0.0);
    }

    #[test]
    fn psi_is_non_negative_and_zero_on_identical(a in sample(), b in sample(), bins in 2usize..20) {
        let p = psi(&a, &b, bins);
        prop_assert!(p >= 0.0 && p.is_finite(), "{p}");
        prop_assert_eq!(psi(&a, &a, bins), 0.0);
    }

    #[test]
    fn shifted_samples_have_large_ks(a in prop::collection::vec(0.0..1.0f64, 50..200)) {
        let shifted: Vec<f64> = a.iter().map(|x| x + 2.0).collect();
        prop_assert_eq!(ks_statistic(&a, &shifted), 1.0);
        prop_assert!(psi(&a, &shifted, 10) > 1.0);
    }
}
