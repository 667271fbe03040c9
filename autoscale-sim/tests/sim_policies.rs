//! The simulator driving the real engine and built-in policies.

use std::sync::OnceLock;
use std::time::Duration;

use convoy_autoscale_sim::{
    builtin_contenders, standard_traces, Mmpp, Oracle, ReplicaModel, Report, SimConfig, Simulation,
    Spike, Trace,
};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Short versions of the standard shapes, small enough for debug builds.
fn short_traces() -> Vec<Trace> {
    vec![
        Trace::spike(Spike {
            base_rps: 50.0,
            magnitude: 4.0,
            start: secs(200),
            ramp: secs(30),
            hold: secs(120),
            duration: secs(600),
        })
        .unwrap(),
        Trace::mmpp(Mmpp {
            base_rps: 40.0,
            burst_factor: 6.0,
            mean_calm: secs(150),
            mean_burst: secs(60),
            duration: secs(600),
            seed: 5,
        })
        .unwrap(),
        Trace::step(50.0, 200.0, secs(200), secs(600)).unwrap(),
    ]
}

/// A replica half as fast as the default (66 requests/s within the SLO),
/// so small traces still need several replicas.
fn config() -> SimConfig {
    SimConfig {
        replica: ReplicaModel {
            batch_overhead: Duration::from_millis(40),
            per_item: Duration::from_millis(10),
            ..ReplicaModel::default()
        },
        ..SimConfig::default()
    }
}

/// Every built-in on every short trace, computed once for all tests.
fn reports() -> &'static [Vec<Report>] {
    static REPORTS: OnceLock<Vec<Vec<Report>>> = OnceLock::new();
    REPORTS.get_or_init(|| {
        short_traces()
            .iter()
            .map(|t| run_all(&config(), t))
            .collect()
    })
}

fn run_all(config: &SimConfig, trace: &Trace) -> Vec<Report> {
    let sim = Simulation::new(config.clone()).unwrap();
    let initial = Oracle::plan(trace, config).replicas_at(Duration::ZERO);
    builtin_contenders(config, initial)
        .unwrap()
        .iter_mut()
        .map(|c| sim.run(trace, c))
        .collect()
}

#[test]
fn same_seed_same_report_with_every_policy() {
    let config = SimConfig::default();
    let trace = &short_traces()[1];
    let a = run_all(&config, trace);
    let b = run_all(&config, trace);
    assert_eq!(a, b);
    let other = SimConfig { seed: 99, ..config };
    let c = run_all(&other, trace);
    assert_ne!(a[0].arrivals, c[0].arrivals);
}

#[test]
fn every_arrival_is_accounted_once_with_every_policy() {
    for r in reports().iter().flatten() {
        {
            assert_eq!(
                r.arrivals,
                r.served + r.dropped + r.unserved,
                "{}",
                r.policy
            );
            assert!(r.over_slo <= r.served);
            assert!(r.peak_replicas <= convoy_autoscale_sim::STANDARD_MAX_REPLICAS);
            assert!(r.replica_seconds > 0.0);
        }
    }
}

#[test]
fn oracle_is_below_every_policy_that_meets_the_slo() {
    let mut met = 0;
    for r in reports().iter().flatten() {
        {
            if r.violating_fraction() < 0.01 {
                met += 1;
                assert!(
                    r.replica_seconds >= r.oracle_replica_seconds,
                    "{} on {}: {} < oracle {}",
                    r.policy,
                    r.trace,
                    r.replica_seconds,
                    r.oracle_replica_seconds
                );
            }
        }
    }
    assert!(
        met >= 3,
        "only {met} runs met the SLO: the check would be vacuous"
    );
}

#[test]
fn policies_scale_with_the_load() {
    // LatencySlo (SLO/4) aims under this slow replica's unloaded p99, so it
    // grows from the start; every other policy must grow with the step.
    for r in &reports()[2] {
        let before = r.timeline[18].replicas; // 190 s: 50 rps
        let after = r.timeline[58].replicas; // 590 s: 200 rps for 6.5 minutes
        assert!(after >= before, "{}: {before} -> {after}", r.policy);
        if r.policy != "LatencySlo (SLO/4, 4x)" {
            assert!(after > before, "{}: {before} -> {after}", r.policy);
        }
        assert!(r.cold_starts > 0, "{}", r.policy);
    }
}

#[test]
fn standard_traces_are_the_documented_ones() {
    let traces = standard_traces();
    let names: Vec<&str> = traces.iter().map(|t| t.name()).collect();
    assert_eq!(names, ["spike", "mmpp", "diurnal", "step", "ramp"]);
    let spike = &traces[0];
    assert_eq!(spike.duration(), secs(3600));
    assert_eq!(spike.rate_at(secs(600)), 200.0);
    assert_eq!(spike.peak_rps(), 1000.0);
    let mmpp = &traces[1];
    assert_eq!(mmpp.duration(), secs(7200));
    assert!((mmpp.peak_rps() - 1200.0).abs() < 1e-6);
    assert_eq!(traces[2].duration(), secs(86_400));
    assert_eq!(traces[3].rate_at(secs(1000)), 1000.0);
    assert_eq!(traces[4].rate_at(secs(3000)), 1500.0);
}
