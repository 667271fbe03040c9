//! The default policy (`Adaptive` given only the SLO) against Ray Serve's
//! default, Kubernetes HPA and Knative KPA on the standard setup.

use std::time::Duration;

use convoy_autoscale::sim::{
    dominations, standard_traces, verdict_contenders, Controller, Oracle, Report, SimConfig,
    Simulation, DOMINATED, TUNED,
};

/// Every contender on one trace of the standard setup.
fn run(trace: &convoy_autoscale::sim::Trace) -> Vec<Report> {
    let config = SimConfig::default();
    let sim = Simulation::new(config.clone()).unwrap();
    let initial = Oracle::plan(trace, &config).replicas_at(Duration::ZERO);
    verdict_contenders(&config, initial)
        .unwrap()
        .into_iter()
        .filter(|c| c.name() != TUNED)
        .map(|mut c| sim.run(trace, &mut c))
        .collect()
}

// About 10 s in a release build, six minutes unoptimised (the day-long
// diurnal trace alone is 26 million simulated requests per policy).
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "minutes without optimisation: cargo test --release -p convoy-autoscale --test default_policy"
)]
fn the_default_dominates_ray_hpa_and_kpa_on_every_standard_trace() {
    // The standard setup: the default replica (20 ms + 5 ms·n, batch 8),
    // 30 s cold start, SLO 250 ms, seed 1. One thread per trace.
    let traces = standard_traces();
    let reports: Vec<Vec<Report>> = std::thread::scope(|scope| {
        let runs: Vec<_> = traces.iter().map(|t| scope.spawn(move || run(t))).collect();
        runs.into_iter().map(|r| r.join().unwrap()).collect()
    });
    for (trace, reports) in traces.iter().zip(&reports) {
        let doms = dominations(reports);
        assert_eq!(doms.len(), DOMINATED.len(), "{}", trace.name());
        for d in doms {
            assert!(
                d.holds(),
                "{}: the default against {}: violating {} vs {}, replica-s {:.0} vs {:.0}",
                trace.name(),
                d.against,
                d.violating.0,
                d.violating.1,
                d.replica_seconds.0,
                d.replica_seconds.1
            );
        }
    }
}
