//! The peers as the comparison runs them: the engine rails and the metric
//! cadence each upstream has, and none it lacks.

use std::time::Duration;

use convoy_autoscale::{LoadSample, ReplicaCounts, Signal};
use convoy_autoscale_sim::{
    builtin_contenders, default_contender, Contender, Controller, SimConfig, DOMINATED,
    RAY_METRICS_PUSH,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn peers() -> Vec<Contender> {
    builtin_contenders(&SimConfig::default(), 10)
        .unwrap()
        .into_iter()
        .filter(|c| DOMINATED.contains(&c.name()))
        .collect()
}

/// None of the three upstreams holds a scale-down while replicas start:
/// kubernetes `pkg/controller/podautoscaler/horizontal.go`
/// (`reconcileAutoscaler` rescales whenever the stabilized, rate-limited
/// count differs from the current one), knative/serving
/// `pkg/autoscaler/scaling/autoscaler.go` (`Scale` returns the desired pod
/// count; only its optional scale-down delay window holds) and Ray Serve's
/// `autoscaling_policy.py` (only `downscale_delay_s` holds). So Ray, HPA and
/// KPA scale down with replicas still starting, once their own rules allow;
/// convoy's own default keeps the engine's hold.
#[test]
fn peers_scale_down_while_replicas_start_and_the_default_holds() {
    let mut peers = peers();
    assert_eq!(peers.len(), DOMINATED.len());
    for c in &mut peers {
        assert!(
            !c.engine().config().hold_down_while_starting,
            "{}",
            c.name()
        );
        // 10 replicas, 2 ready, 8 starting (for longer than any test of
        // the start-up timeout would notice), and no load at all.
        let counts = ReplicaCounts::new(10, 2);
        let mut scaled_down = None;
        for t in 0..=700 {
            let now = secs(t);
            c.observe(now, &LoadSample::ongoing(0.0));
            if t % Controller::interval(c).as_secs() == 0 && c.desired(now, counts) < 10 {
                scaled_down = Some(t);
                break;
            }
        }
        let reason = c.engine().last_decision().map(|d| d.reason.kind());
        assert!(scaled_down.is_some(), "{} held: {reason:?}", c.name());
        assert_ne!(reason, Some("cold_start_hold"), "{}", c.name());
    }

    let mut ours = default_contender(&SimConfig::default(), 10).unwrap();
    assert!(ours.engine().config().hold_down_while_starting);
    for t in 0..=120 {
        let now = secs(t);
        ours.observe(now, &LoadSample::ongoing(0.0));
        assert_eq!(ours.desired(now, ReplicaCounts::new(10, 2)), 10, "t = {t}");
    }
}

/// Ray Serve's replicas record their load locally and push it to the
/// controller every 10 s (`RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`
/// in `python/ray/serve/_private/constants.py`; the controller keeps what
/// was last pushed, `autoscaling_state.py`), and the policy averages its
/// `look_back_period_s` over what was pushed. So Ray's contender sees a
/// change of load only at the next push, and then all of it.
#[test]
fn ray_decides_on_what_its_replicas_pushed_every_10s() {
    let mut ray = builtin_contenders(&SimConfig::default(), 2)
        .unwrap()
        .into_iter()
        .find(|c| c.name() == "TargetOngoing (Ray default)")
        .unwrap();
    assert_eq!(ray.metrics_push(), Some(RAY_METRICS_PUSH));
    let look_back = secs(30);
    let mean = |c: &Contender, t: u64| {
        c.engine()
            .window()
            .mean(secs(t), look_back, Signal::Ongoing)
    };
    for t in 1..=9 {
        ray.observe(secs(t), &LoadSample::ongoing(4.0));
        assert_eq!(mean(&ray, t), None, "nothing pushed before 10 s (t = {t})");
    }
    ray.observe(secs(10), &LoadSample::ongoing(4.0));
    assert_eq!(mean(&ray, 10), Some(4.0));
    // The load jumps at 11 s; the controller still has the 10 s push.
    for t in 11..=19 {
        ray.observe(secs(t), &LoadSample::ongoing(40.0));
        let samples = ray
            .engine()
            .window()
            .view(secs(t), look_back)
            .samples()
            .count();
        assert_eq!(samples, 10, "t = {t}");
        assert_eq!(mean(&ray, t), Some(4.0), "t = {t}");
    }
    // The 20 s push carries every sample since 10 s, with its own time:
    // the look-back's time-weighted mean over the pushed samples, 9 s at 4
    // (the first sample has no interval) and 10 s at 40.
    ray.observe(secs(20), &LoadSample::ongoing(40.0));
    let pushed = ray
        .engine()
        .window()
        .view(secs(20), look_back)
        .samples()
        .count();
    assert_eq!(pushed, 20);
    let m = mean(&ray, 20).unwrap();
    assert!((m - (9.0 * 4.0 + 10.0 * 40.0) / 19.0).abs() < 1e-9, "{m}");
}

/// The other contenders get every sample as it is taken.
#[test]
fn only_ray_waits_for_pushes() {
    for c in builtin_contenders(&SimConfig::default(), 2).unwrap() {
        let expected = (c.name() == "TargetOngoing (Ray default)").then_some(RAY_METRICS_PUSH);
        assert_eq!(c.metrics_push(), expected, "{}", c.name());
    }
}
