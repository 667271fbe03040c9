//! Hand-computed cases for each built-in policy.

use std::time::Duration;

use proptest::prelude::*;

use super::*;
use crate::signal::{BatchCost, LoadSample, Window};
use crate::ConfigErrorKind;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

/// A window with a constant `ongoing` sampled every second over `[0, until]`.
fn steady(ongoing: f64, until: u64) -> Window {
    let mut w = Window::new(s(600));
    for t in 0..=until {
        w.push(s(t), LoadSample::ongoing(ongoing));
    }
    w
}

fn decide(p: &mut dyn Policy, w: &Window, now: u64, current: u32, ready: u32) -> Recommendation {
    p.decide(&PolicyInput::new(s(now), current, ready, w))
}

// ---- Ray Serve ----

#[test]
fn ray_target_two_ten_ongoing_on_two_replicas_gives_five() {
    let mut p = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    let rec = decide(&mut p, &steady(10.0, 30), 30, 2, 2);
    assert_eq!(rec.desired, 5);
    assert_eq!(rec.reason.kind(), "scale");
    assert_eq!(rec.reason.observed(), Some(5.0));
}

#[test]
fn ray_factors_smooth_the_error() {
    // 2 ongoing on 4 replicas, target 2: error ratio 0.25.
    let w = steady(2.0, 30);
    let mut p = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    assert_eq!(decide(&mut p, &w, 30, 4, 4).desired, 1);
    // downscaling_factor 0.5: ceil(4 · (1 + (0.25 − 1) · 0.5)) = ceil(2.5) = 3.
    let mut p = TargetOngoing::new(TargetOngoingConfig::default().downscaling_factor(0.5)).unwrap();
    assert_eq!(decide(&mut p, &w, 30, 4, 4).desired, 3);
    // upscaling_factor 0.5 with 20 ongoing on 2: ceil(2 · (1 + (5 − 1) · 0.5)) = 6.
    let mut p = TargetOngoing::new(TargetOngoingConfig::default().upscaling_factor(0.5)).unwrap();
    assert_eq!(decide(&mut p, &steady(20.0, 30), 30, 2, 2).desired, 6);
}

#[test]
fn ray_idle_shrinks_by_at_least_one_and_starts_from_zero() {
    // Zero load with a small downscaling factor would keep 1: Ray removes one.
    let mut p = TargetOngoing::new(TargetOngoingConfig::default().downscaling_factor(0.1)).unwrap();
    assert_eq!(decide(&mut p, &steady(0.0, 30), 30, 1, 1).desired, 0);
    let mut p = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    let rec = decide(&mut p, &steady(5.0, 30), 30, 0, 0);
    assert_eq!((rec.desired, rec.reason.kind()), (3, "scale_from_zero"));
    assert_eq!(decide(&mut p, &steady(0.0, 30), 30, 0, 0).desired, 0);
}

#[test]
fn ray_uses_ready_replicas_and_holds_without_metrics() {
    let mut p = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    // 4 replicas exist, 2 ready: 10 ongoing on 2 running → 5.
    assert_eq!(decide(&mut p, &steady(10.0, 30), 30, 4, 2).desired, 5);
    let empty = Window::new(s(60));
    let rec = decide(&mut p, &empty, 30, 3, 3);
    assert_eq!((rec.desired, rec.reason.kind()), (3, "no_metrics"));
}

#[test]
fn bad_targets_are_rejected_at_construction() {
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let err = TargetOngoing::new(TargetOngoingConfig::default().target_ongoing_requests(bad))
            .unwrap_err();
        assert_eq!(err.kind(), ConfigErrorKind::InvalidNumber);
        assert_eq!(err.field(), "target_ongoing_requests");
        assert!(Hpa::new(HpaConfig::default().target(HpaTarget::AverageValue(bad))).is_err());
        assert!(Kpa::new(KpaConfig::default().target(bad)).is_err());
        assert!(LatencySlo::new(LatencySloConfig::default().max_scale_up_factor(bad)).is_err());
        assert!(QueueModel::new(QueueModelConfig::default().target_utilization(bad)).is_err());
    }
    assert!(TargetOngoing::new(TargetOngoingConfig::default().look_back(Duration::ZERO)).is_err());
    assert!(Hpa::new(HpaConfig::default().tolerance(1.5)).is_err());
    let err = Kpa::new(KpaConfig::default().panic_window(s(120))).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::InvalidWindow);
    assert!(Kpa::new(KpaConfig::default().panic_threshold(0.5)).is_err());
    assert!(LatencySlo::new(LatencySloConfig::default().quantile(crate::Signal::Ongoing)).is_err());
    assert!(LatencySlo::new(LatencySloConfig::default().target(Duration::ZERO)).is_err());
    assert!(QueueModel::new(QueueModelConfig::default().learn_cost(false)).is_err());
    assert!(QueueModel::new(QueueModelConfig::default().max_batch_size(0)).is_err());
    assert!(Max::new(vec![]).is_err());
    assert!(Min::new(vec![]).is_err());
}

// ---- Kubernetes HPA ----

fn hpa() -> Hpa {
    Hpa::new(HpaConfig::default()).unwrap()
}

#[test]
fn hpa_tolerance_band() {
    // Target 2 per replica on 4 replicas. Average 2.15 is 7.5 % over: no change.
    let rec = decide(&mut hpa(), &steady(8.6, 30), 30, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (4, "within_tolerance"));
    // Average 1.85 is 7.5 % under: no change.
    assert_eq!(decide(&mut hpa(), &steady(7.4, 30), 30, 4, 4).desired, 4);
    // Average 2.3 is 15 % over: ceil(1.15 · 4) = 5.
    let rec = decide(&mut hpa(), &steady(9.2, 30), 30, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (5, "scale"));
    // Average 1.5 is 25 % under: ceil(0.75 · 4) = 3.
    assert_eq!(decide(&mut hpa(), &steady(6.0, 30), 30, 4, 4).desired, 3);
}

fn reporting(total: f64, replicas: u32) -> Window {
    let mut w = Window::new(s(600));
    for t in 0..=30 {
        w.push(
            s(t),
            LoadSample {
                replicas_reporting: Some(replicas),
                ..LoadSample::ongoing(total)
            },
        );
    }
    w
}

#[test]
fn hpa_missing_metrics_are_conservative() {
    // 4 ready, 2 report a total of 2 (average 1, ratio 0.5 → scale down).
    // Missing replicas count as 100 % of target: (2 + 2·2) / (2 · 4) = 0.75 → 3, not 1.
    assert_eq!(decide(&mut hpa(), &reporting(2.0, 2), 30, 4, 4).desired, 3);
    // 2 report a total of 12 (average 6, ratio 3 → scale up).
    // Missing count as 0: 12 / (2 · 4) = 1.5 → 6, not 6 · 2 = ... the full ratio.
    assert_eq!(decide(&mut hpa(), &reporting(12.0, 2), 30, 4, 4).desired, 6);
    // Nobody reports: hold.
    let rec = decide(&mut hpa(), &reporting(12.0, 0), 30, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (4, "no_metrics"));
}

#[test]
fn hpa_not_ready_replicas_count_as_zero_when_scaling_up() {
    // 6 replicas, 4 ready reporting 12 (ratio 1.5). With the 2 starting ones at
    // 0 the ratio is 12 / (2 · 6) = 1.0: within tolerance, hold.
    let rec = decide(&mut hpa(), &steady(12.0, 30), 30, 6, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (6, "within_tolerance"));
}

#[test]
fn hpa_scale_down_is_stabilized_for_300s() {
    let mut p = hpa();
    let mut w = Window::new(s(600));
    for t in 0..=10 {
        w.push(s(t), LoadSample::ongoing(16.0));
    }
    assert_eq!(decide(&mut p, &w, 10, 8, 8).desired, 8);
    for t in 11..=400 {
        w.push(s(t), LoadSample::ongoing(4.0));
    }
    // At t = 50 the raw recommendation is 2 but the 300 s window holds 8.
    let rec = decide(&mut p, &w, 50, 8, 8);
    assert_eq!((rec.desired, rec.reason.kind()), (8, "stabilized"));
    // Once the high recommendation has aged out, scale down.
    assert_eq!(decide(&mut p, &w, 311, 8, 8).desired, 2);
}

#[test]
fn hpa_scale_up_rate_rules() {
    // Raw 20 from 2 replicas; default rules allow max(2 + 4, 2 · 2) = 6 per 15 s.
    let mut p = hpa();
    let w = steady(40.0, 100);
    let rec = decide(&mut p, &w, 30, 2, 2);
    assert_eq!((rec.desired, rec.reason.kind()), (6, "step_limit"));
    // 5 s later the replicas went 2 → 6: the period started at 2, so no more room.
    assert_eq!(decide(&mut p, &w, 35, 6, 6).desired, 6);
    // The rescale happened at t = 30 (upstream stamps the event then, not
    // when the new count is first seen); 15 s later, 6 → max(6 + 4, 12) = 12.
    assert_eq!(decide(&mut p, &w, 44, 6, 6).desired, 6);
    assert_eq!(decide(&mut p, &w, 45, 6, 6).desired, 12);
    // Pods-only Min rule: 1 pod per 15 s.
    let cfg = HpaConfig::default().scale_up(HpaScalingRules {
        stabilization_window: Duration::ZERO,
        select: SelectPolicy::Min,
        rules: vec![HpaRule::pods(1, s(15)), HpaRule::percent(100, s(15))],
    });
    let mut p = Hpa::new(cfg).unwrap();
    assert_eq!(decide(&mut p, &w, 30, 2, 2).desired, 3);
}

/// Upstream `pkg/controller/podautoscaler/horizontal.go`: `storeScaleEvent`
/// stamps a scale event at the rescale, and `getReplicasChangePerPeriod`
/// counts the events with `timestamp + period > now`. Under sustained load,
/// with the default rule of 100 % per 15 s and a 15 s sync period, the event
/// of one sync has left the window at the next, so HPA doubles every sync.
#[test]
fn hpa_doubles_every_15s_under_sustained_load() {
    let mut p = hpa();
    let w = steady(10_000.0, 200);
    let mut replicas = 8;
    let mut seen = Vec::new();
    for now in (30..=90).step_by(15) {
        replicas = decide(&mut p, &w, now, replicas, replicas).desired;
        seen.push(replicas);
    }
    assert_eq!(seen, [16, 32, 64, 128, 256]);
    // A change against the direction asked for (someone else scaled down)
    // is dated when it is seen: the period then started at 8, so 16.
    let mut p = hpa();
    assert_eq!(decide(&mut p, &w, 30, 8, 8).desired, 16);
    assert_eq!(decide(&mut p, &w, 45, 4, 4).desired, 16);
}

#[test]
fn hpa_value_target() {
    let mut w = Window::new(s(60));
    for t in 0..=30 {
        w.push(
            s(t),
            LoadSample {
                latency_p99: Some(Duration::from_millis(300)),
                ..Default::default()
            },
        );
    }
    let cfg = HpaConfig::default()
        .metric(crate::Signal::LatencyP99)
        .target(HpaTarget::Value(0.1));
    let mut p = Hpa::new(cfg).unwrap();
    // ratio 3 on 2 ready → 6 (within the 4-pods / 100 % rule: max(6, 4) = 6).
    assert_eq!(decide(&mut p, &w, 30, 2, 2).desired, 6);
}

// ---- Knative KPA ----

fn kpa() -> Kpa {
    Kpa::new(KpaConfig::default().target(10.0).target_utilization(1.0)).unwrap()
}

#[test]
fn kpa_stable_mode_uses_the_60s_average() {
    let mut p = kpa();
    // With one ready replica the autoscaler does not start in panic mode.
    assert_eq!(decide(&mut p, &steady(5.0, 60), 60, 1, 1).desired, 1);
    assert!(!p.is_panicking());
    // 35 in flight over 3 ready, target 10: ceil(3.5) = 4 (4 / 3 < 2: no panic).
    let rec = decide(&mut p, &steady(35.0, 60), 60, 3, 3);
    assert_eq!((rec.desired, rec.reason.kind()), (4, "scale"));
    assert!(!p.is_panicking());
    // Scale-down is limited to ready / max_scale_down_rate per decision.
    assert_eq!(decide(&mut p, &steady(0.0, 60), 60, 8, 8).desired, 4);
}

#[test]
fn kpa_panic_entry_and_exit() {
    let mut p = kpa();
    let mut w = Window::new(s(600));
    for t in 0..=54 {
        w.push(s(t), LoadSample::ongoing(20.0));
    }
    // Two ready at the first decision: a new autoscaler panics, holding 2.
    assert_eq!(decide(&mut p, &w, 54, 2, 2).desired, 2);
    assert!(p.is_panicking());
    // A burst: 60 in flight over the last 6 s → 6 pods, 3x the 2 ready ≥ 2.0: panic.
    for t in 55..=60 {
        w.push(s(t), LoadSample::ongoing(60.0));
    }
    let rec = decide(&mut p, &w, 60, 2, 2);
    assert!(p.is_panicking());
    assert_eq!((rec.desired, rec.reason.kind()), (6, "panic"));
    // The burst ends; the panic window is calm but panic mode holds 6 (no scale-down)
    // until a full stable window has passed since the last over-threshold decision.
    for t in 61..=200 {
        w.push(s(t), LoadSample::ongoing(20.0));
    }
    for t in [61, 70, 100, 119, 120] {
        let rec = decide(&mut p, &w, t, 6, 6);
        assert!(p.is_panicking(), "t = {t}");
        assert_eq!(rec.desired, 6, "t = {t}");
    }
    // More than 60 s after the last panic condition (t = 60): back to the stable count.
    let rec = decide(&mut p, &w, 121, 6, 6);
    assert!(!p.is_panicking());
    assert_eq!((rec.desired, rec.reason.kind()), (3, "scale"));
}

#[test]
fn kpa_panic_count_only_grows_within_an_episode() {
    let mut p = kpa();
    let mut w = Window::new(s(600));
    for t in 0..=60 {
        w.push(s(t), LoadSample::ongoing(if t > 54 { 100.0 } else { 10.0 }));
    }
    assert_eq!(decide(&mut p, &w, 60, 1, 1).desired, 10);
    for t in 61..=63 {
        w.push(s(t), LoadSample::ongoing(40.0));
    }
    // Panic estimate drops to ceil(avg/10) with 4 ready, yet the recommendation stays 10.
    let rec = decide(&mut p, &w, 63, 10, 4);
    assert!(p.is_panicking());
    assert_eq!(rec.desired, 10);
}

/// Upstream `pkg/autoscaler/scaling/autoscaler.go`: in panic mode the
/// desired count is `max(stable, panic)`, ratcheted by `maxPanicPods` over
/// the episode; it counts ready pods only, and `maxPanicPods` is reset to 0
/// when the episode ends, so the next one starts afresh.
#[test]
fn kpa_ratchets_max_of_stable_and_panic_within_the_episode_only() {
    let mut p = kpa();
    let mut w = Window::new(s(600));
    // A stable average above the panic one: 60 s at 80, then 6 s at 25.
    for t in 0..=54 {
        w.push(s(t), LoadSample::ongoing(80.0));
    }
    for t in 55..=60 {
        w.push(s(t), LoadSample::ongoing(25.0));
    }
    // One ready, 20 starting: panic (3 / 1 ≥ 2), and the count is
    // max(stable 8, panic 3) = 8, not the 21 replicas that exist.
    let rec = decide(&mut p, &w, 60, 21, 1);
    assert!(p.is_panicking());
    assert_eq!((rec.desired, rec.reason.kind()), (8, "panic"));
    // Calm afterwards: the episode holds 8 until it ends strictly after 60 s.
    for t in 61..=400 {
        w.push(s(t), LoadSample::ongoing(10.0));
    }
    assert_eq!(decide(&mut p, &w, 120, 8, 8).desired, 8);
    let rec = decide(&mut p, &w, 122, 8, 8);
    assert!(!p.is_panicking());
    assert_eq!((rec.desired, rec.reason.kind()), (4, "scale"));
    // A new episode ratchets from its own counts, not from the old 8.
    for t in 401..=406 {
        w.push(s(t), LoadSample::ongoing(30.0));
    }
    let rec = decide(&mut p, &w, 406, 1, 1);
    assert!(p.is_panicking());
    assert_eq!(rec.desired, 3);
}

/// Upstream `pkg/autoscaler/scaling/autoscaler.go`: panic mode ends only
/// when `panicTime.Add(StableWindow).Before(now)`, strictly after a full
/// stable window.
#[test]
fn kpa_panic_exit_is_strict() {
    let mut p = kpa();
    let mut w = Window::new(s(600));
    for t in 0..=60 {
        w.push(s(t), LoadSample::ongoing(if t > 54 { 40.0 } else { 10.0 }));
    }
    decide(&mut p, &w, 60, 1, 1);
    assert!(p.is_panicking());
    for t in 61..=200 {
        w.push(s(t), LoadSample::ongoing(10.0));
    }
    decide(&mut p, &w, 120, 4, 4);
    assert!(
        p.is_panicking(),
        "exactly one stable window later it still panics"
    );
    decide(&mut p, &w, 121, 4, 4);
    assert!(!p.is_panicking());
}

/// Upstream `pkg/autoscaler/scaling/autoscaler.go` (`newAutoscaler`): a new
/// autoscaler starts in panic mode with `maxPanicPods` = the ready count
/// when more than one pod is ready, so it keeps the current scale until it
/// has the history to decide; with 0 or 1 it starts in stable mode.
#[test]
fn kpa_starts_in_panic_holding_the_ready_count_when_more_than_one() {
    let mut p = kpa();
    let w = steady(0.0, 200);
    let rec = decide(&mut p, &w, 10, 6, 5);
    assert!(p.is_panicking());
    assert_eq!((rec.desired, rec.reason.kind()), (5, "panic"));
    // It holds 5 through the stable window, then scales on the load.
    assert_eq!(decide(&mut p, &w, 70, 5, 5).desired, 5);
    let rec = decide(&mut p, &w, 72, 5, 5);
    assert!(!p.is_panicking());
    assert_eq!(rec.desired, 2); // at most 2x down per decision
                                // One ready replica: stable mode from the start.
    let mut p = kpa();
    decide(&mut p, &w, 0, 1, 1);
    assert!(!p.is_panicking());
    // No data yet: still starts panicking, and holds.
    let mut p = kpa();
    let rec = decide(&mut p, &Window::new(s(600)), 0, 3, 3);
    assert!(p.is_panicking());
    assert_eq!(rec.desired, 3);
}

// ---- LatencySlo ----

fn latency_window(p99_ms: u64, ongoing: f64) -> Window {
    let mut w = Window::new(s(600));
    for t in 0..=30 {
        w.push(
            s(t),
            LoadSample {
                latency_p99: Some(Duration::from_millis(p99_ms)),
                completions: 10,
                ..LoadSample::ongoing(ongoing)
            },
        );
    }
    w
}

#[test]
fn latency_slo_scales_up_fast_on_violation_without_windup() {
    let mut p = LatencySlo::new(LatencySloConfig::default()).unwrap();
    // p99 200 ms vs 100 ms target on 4 ready: ratio 2 → 8.
    let rec = decide(&mut p, &latency_window(200, 10.0), 30, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (8, "slo_violation"));
    // Ratio 5 is capped at max_scale_up_factor 2.
    assert_eq!(
        decide(&mut p, &latency_window(500, 10.0), 30, 4, 4).desired,
        8
    );
    // The same violation while the 4 new replicas cold-start: no compounding.
    let rec = decide(&mut p, &latency_window(200, 10.0), 30, 8, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (8, "cold_start"));
    // A slight violation still adds at least one replica.
    assert_eq!(
        decide(&mut p, &latency_window(101, 10.0), 30, 4, 4).desired,
        5
    );
}

#[test]
fn latency_slo_scales_down_slowly_when_comfortable() {
    let mut p = LatencySlo::new(LatencySloConfig::default()).unwrap();
    // p99 20 ms < 0.5 · 100 ms: remove max(1, 10 %) of 20 → 18.
    let rec = decide(&mut p, &latency_window(20, 10.0), 30, 20, 20);
    assert_eq!((rec.desired, rec.reason.kind()), (18, "slo_comfortable"));
    assert_eq!(
        decide(&mut p, &latency_window(20, 10.0), 30, 5, 5).desired,
        4
    );
    // Between the threshold and the target: hold.
    let rec = decide(&mut p, &latency_window(70, 10.0), 30, 5, 5);
    assert_eq!((rec.desired, rec.reason.kind()), (5, "within_slo"));
    // Not while replicas are starting.
    assert_eq!(
        decide(&mut p, &latency_window(20, 10.0), 30, 5, 4).desired,
        5
    );
    // The ongoing guard: 10 in flight with at most 4 per replica needs 3.
    let mut p =
        LatencySlo::new(LatencySloConfig::default().max_ongoing_per_replica(Some(4.0))).unwrap();
    assert_eq!(
        decide(&mut p, &latency_window(20, 10.0), 30, 3, 3).desired,
        3
    );
    assert_eq!(
        decide(&mut p, &latency_window(20, 10.0), 30, 4, 4).desired,
        3
    );
}

#[test]
fn latency_slo_idle_and_missing() {
    let mut p = LatencySlo::new(LatencySloConfig::default()).unwrap();
    let rec = decide(&mut p, &steady(0.0, 30), 30, 3, 3);
    assert_eq!((rec.desired, rec.reason.kind()), (2, "idle"));
    let rec = decide(&mut p, &steady(5.0, 30), 30, 3, 3);
    assert_eq!((rec.desired, rec.reason.kind()), (3, "no_metrics"));
    assert_eq!(decide(&mut p, &steady(5.0, 30), 30, 0, 0).desired, 1);
}

// ---- QueueModel ----

fn arrivals(rate: u64, batches: Option<(u64, u64, Duration)>) -> Window {
    let mut w = Window::new(s(600));
    for t in 0..=60 {
        let mut sample = LoadSample {
            arrivals: rate,
            ..Default::default()
        };
        if let Some((b, items, busy)) = batches {
            sample.batches = b;
            sample.batch_items = items;
            sample.batch_busy = busy;
        }
        w.push(s(t), sample);
    }
    w
}

fn cost_10ms_plus_1ms() -> BatchCost {
    BatchCost::new(Duration::from_millis(10), Duration::from_millis(1))
}

#[test]
fn queue_model_hand_computed() {
    let cfg = QueueModelConfig::default()
        .cost(Some(cost_10ms_plus_1ms()))
        .learn_cost(false);
    // 1000 req/s; a replica peaks at 32 / 42 ms = 762 req/s, 80 % of that is 610:
    // 2 replicas by utilisation. At 500 req/s each the batch fixed point is
    // k = 500 · 0.01 / (1 − 0.5) = 10, tail ≈ 2 · cost(10) = 40 ms ≤ 100 ms.
    let mut p = QueueModel::new(cfg.clone()).unwrap();
    let rec = decide(&mut p, &arrivals(1000, None), 60, 1, 1);
    assert_eq!(rec.desired, 2);
    assert!((rec.reason.observed().unwrap() - 0.040).abs() < 1e-9);
    // A 35 ms objective needs 3 (k = 5, 2 · cost(5) = 30 ms).
    let mut p = QueueModel::new(cfg.clone().slo(Duration::from_millis(35))).unwrap();
    assert_eq!(decide(&mut p, &arrivals(1000, None), 60, 1, 1).desired, 3);
    // No traffic: zero (the engine's min applies).
    let mut p = QueueModel::new(cfg).unwrap();
    assert_eq!(decide(&mut p, &arrivals(0, None), 60, 3, 3).desired, 0);
}

#[test]
fn queue_model_learns_the_cost_curve() {
    let mut p = QueueModel::new(QueueModelConfig::default()).unwrap();
    // No batch statistics and no prior: hold.
    let rec = decide(&mut p, &arrivals(1000, None), 60, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (4, "no_cost_model"));
    // Batches of 10 items taking 20 ms: the proportional fit (2 ms per item)
    // caps a replica at 500 req/s → 1000 / (0.8 · 500) = 2.5 → 3.
    let w = arrivals(1000, Some((50, 500, Duration::from_millis(1000))));
    assert_eq!(decide(&mut p, &w, 60, 4, 4).desired, 3);
}

#[test]
fn queue_model_unbatched_md1() {
    // No batching (max batch 1), 10 ms per request, 50 req/s on one replica:
    // ρ = 0.5, wait = 0.5 · 10 / (2 · 0.5) = 5 ms, tail 3 · 5 + 10 = 25 ms.
    let cfg = QueueModelConfig::default()
        .cost(Some(BatchCost::new(
            Duration::from_millis(10),
            Duration::ZERO,
        )))
        .learn_cost(false)
        .max_batch_size(1)
        .slo(Duration::from_millis(25));
    let p = QueueModel::new(cfg).unwrap();
    let l = p
        .predicted_latency(
            &BatchCost::new(Duration::from_millis(10), Duration::ZERO),
            50.0,
        )
        .unwrap();
    assert!((l - 0.025).abs() < 1e-12);
    let mut p = p;
    assert_eq!(decide(&mut p, &arrivals(50, None), 60, 1, 1).desired, 1);
    assert_eq!(decide(&mut p, &arrivals(100, None), 60, 1, 1).desired, 2);
}

// ---- combinators ----

#[test]
fn max_and_min_pick_extremes_with_reasons() {
    let w = steady(10.0, 60);
    let ray =
        || Box::new(TargetOngoing::new(TargetOngoingConfig::default()).unwrap()) as Box<dyn Policy>;
    let ray4 = || {
        Box::new(
            TargetOngoing::new(TargetOngoingConfig::default().target_ongoing_requests(4.0))
                .unwrap(),
        ) as Box<dyn Policy>
    };
    let mut max = Max::new(vec![ray4(), ray()]).unwrap();
    assert_eq!(decide(&mut max, &w, 60, 2, 2).desired, 5);
    let mut min = Min::new(vec![ray4(), ray()]).unwrap();
    let rec = decide(&mut min, &w, 60, 2, 2);
    assert_eq!(rec.desired, 3);
    assert_eq!(rec.reason.target(), Some(4.0));
    assert_eq!(min.horizon(), s(30));
}

// ---- properties ----

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// KPA's recommendation never goes down within a panic episode
    /// (upstream `autoscaler.go`'s `maxPanicPods` ratchet).
    #[test]
    fn kpa_never_scales_down_while_panicking(
        loads in prop::collection::vec(0.0f64..400.0, 1..120),
        ready_frac in 0.0f64..=1.0,
    ) {
        let mut p = kpa();
        let mut w = Window::new(s(600));
        let mut current = 1u32;
        let mut previous = 0u32;
        for (t, load) in loads.iter().enumerate() {
            let t = t as u64 * 2;
            w.push(s(t), LoadSample::ongoing(*load));
            let ready = ((f64::from(current) * ready_frac).round() as u32).min(current);
            let was_panicking = p.is_panicking();
            let rec = p.decide(&PolicyInput::new(s(t), current, ready, &w));
            if was_panicking && p.is_panicking() {
                prop_assert!(rec.desired >= previous, "t={t} {rec:?} previous={previous}");
            }
            previous = rec.desired;
            current = rec.desired.clamp(1, 1000);
        }
    }

    /// No built-in panics or returns absurd counts on arbitrary (even invalid) samples.
    #[test]
    fn policies_are_total(
        samples in prop::collection::vec((any::<f64>(), 0u64..1_000_000, prop::option::of(0u64..10_000)), 0..40),
        current in 0u32..50,
        ready in 0u32..50,
    ) {
        let mut w = Window::new(s(600));
        for (t, (ongoing, arrivals, p99)) in samples.iter().enumerate() {
            w.push(s(t as u64), LoadSample {
                arrivals: *arrivals,
                completions: 1,
                latency_p99: p99.map(Duration::from_millis),
                batches: 1,
                batch_items: 4,
                batch_busy: Duration::from_millis(20),
                ..LoadSample::ongoing(*ongoing)
            });
        }
        let now = s(samples.len() as u64);
        let mut policies: Vec<Box<dyn Policy>> = vec![
            Box::new(TargetOngoing::new(TargetOngoingConfig::default()).unwrap()),
            Box::new(hpa()),
            Box::new(kpa()),
            Box::new(LatencySlo::new(LatencySloConfig::default()).unwrap()),
            Box::new(QueueModel::new(QueueModelConfig::default()).unwrap()),
        ];
        let input = PolicyInput::new(now, current, ready, &w);
        for p in &mut policies {
            let rec = p.decide(&input);
            if w.is_empty() {
                prop_assert_eq!(rec.desired, current);
            }
        }
    }
}

#[test]
fn queue_model_projects_a_rising_rate_over_the_lead_time() {
    let mut w = Window::new(s(600));
    for t in 0..=60 {
        let rate = if t > 55 { 400 } else { 200 };
        w.push(
            s(t),
            LoadSample {
                arrivals: rate,
                ..Default::default()
            },
        );
    }
    let cfg = QueueModelConfig::default()
        .cost(Some(cost_10ms_plus_1ms()))
        .learn_cost(false);
    // 400 req/s now, 200 the 5 s before: projected 30 s ahead, 400 + 40 · 30 = 1600
    // req/s → 1600 / 610 per replica → 3.
    let mut p = QueueModel::new(cfg.clone()).unwrap();
    assert_eq!(decide(&mut p, &w, 60, 1, 1).desired, 3);
    // Without look-ahead, 400 req/s fit one replica.
    let mut p = QueueModel::new(cfg.clone().lead_time(Duration::ZERO)).unwrap();
    assert_eq!(decide(&mut p, &w, 60, 1, 1).desired, 1);
    // A steady rate is not projected.
    let mut p = QueueModel::new(cfg).unwrap();
    assert_eq!(decide(&mut p, &arrivals(400, None), 60, 1, 1).desired, 1);
}

#[test]
fn latency_slo_scales_by_the_shortfall_when_saturated() {
    let mut w = Window::new(s(600));
    for t in 0..=30 {
        w.push(
            s(t),
            LoadSample {
                latency_p99: Some(Duration::from_millis(500)),
                arrivals: 1000,
                completions: 200,
                ..LoadSample::ongoing(500.0)
            },
        );
    }
    let mut p = LatencySlo::new(LatencySloConfig::default().max_utilization(1.0)).unwrap();
    // The latency ratio alone (capped at 2x) would give 8; 4 ready replicas
    // completing 200 of 1000 arriving per second need 20.
    let rec = decide(&mut p, &w, 30, 4, 4);
    assert_eq!((rec.desired, rec.reason.kind()), (20, "slo_violation"));
    // It learned 50 req/s per replica; at the default 70 % utilisation: 1000 / 35 → 29.
    let mut p = LatencySlo::new(LatencySloConfig::default()).unwrap();
    assert_eq!(decide(&mut p, &w, 30, 4, 4).desired, 29);
    assert_eq!(p.capacity(), Some(50.0));
    // The learned capacity bounds later scale-downs: 200 req/s at 35 per replica needs 6.
    let mut calm = Window::new(s(600));
    for t in 0..=60 {
        calm.push(
            s(t),
            LoadSample {
                latency_p99: Some(Duration::from_millis(20)),
                arrivals: 200,
                completions: 200,
                ..LoadSample::ongoing(10.0)
            },
        );
    }
    let rec = decide(&mut p, &calm, 60, 6, 6);
    assert_eq!((rec.desired, rec.reason.kind()), (6, "slo_comfortable"));
    assert_eq!(decide(&mut p, &calm, 60, 29, 29).desired, 27);
}

#[test]
fn queue_model_scale_down_hysteresis() {
    let cfg = QueueModelConfig::default()
        .cost(Some(cost_10ms_plus_1ms()))
        .learn_cost(false);
    let mut p = QueueModel::new(cfg.clone()).unwrap();
    // 1150 req/s: 2 replicas at 575 each are within 80 % of 762, not within 72 %.
    assert_eq!(decide(&mut p, &arrivals(1150, None), 60, 1, 1).desired, 2);
    let rec = decide(&mut p, &arrivals(1150, None), 60, 3, 3);
    assert_eq!((rec.desired, rec.reason.kind()), (3, "within_tolerance"));
    let mut p = QueueModel::new(cfg.scale_down_tolerance(0.0)).unwrap();
    assert_eq!(decide(&mut p, &arrivals(1150, None), 60, 3, 3).desired, 2);
}

#[test]
fn ray_silent_replicas_count_at_target_when_scaling_down() {
    let mut p = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    // 4 ready, 2 report 2 in flight: alone that says 1 replica; with the two
    // silent ones at the target of 2, (2 + 4) / 2 = 3.
    assert_eq!(decide(&mut p, &reporting(2.0, 2), 30, 4, 4).desired, 3);
    // All reporting: the plain formula.
    assert_eq!(decide(&mut p, &reporting(2.0, 4), 30, 4, 4).desired, 1);
    // Scaling up is not held back by silent replicas.
    assert_eq!(decide(&mut p, &reporting(20.0, 2), 30, 4, 4).desired, 10);
}

#[test]
fn queue_model_prefers_a_real_fit_then_the_prior_then_proportional() {
    let narrow = arrivals(1000, Some((50, 500, Duration::from_millis(1000))));
    // Batches all of size 10: no two-term fit, so the configured prior
    // (10 ms + 1 ms · n, 2 replicas for 1000 req/s) wins over the proportional curve (3).
    let cfg = QueueModelConfig::default().cost(Some(cost_10ms_plus_1ms()));
    let mut p = QueueModel::new(cfg.clone()).unwrap();
    assert_eq!(decide(&mut p, &narrow, 60, 1, 1).desired, 2);
    // Spread batch sizes give a genuine fit, which wins over the prior:
    // cost(n) = 20 ms + 2 ms · n peaks at 32 / 84 ms = 381 req/s → 1000 / (0.8 · 381) → 4.
    let mut w = Window::new(s(600));
    for t in 0..=60u64 {
        let n = if t % 2 == 0 { 4 } else { 24 };
        w.push(
            s(t),
            LoadSample {
                arrivals: 1000,
                batches: 10,
                batch_items: 10 * n,
                batch_busy: Duration::from_millis(20 + 2 * n) * 10,
                ..Default::default()
            },
        );
    }
    let fit = w.batch_cost(s(60), s(60)).unwrap();
    assert!((fit.per_item.as_secs_f64() - 0.002).abs() < 1e-9, "{fit:?}");
    let mut p = QueueModel::new(cfg).unwrap();
    assert_eq!(decide(&mut p, &w, 60, 1, 1).desired, 4);
}
