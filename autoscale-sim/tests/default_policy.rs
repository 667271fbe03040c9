//! The default policy (`Adaptive` given only the SLO) against Ray Serve's
//! default, Kubernetes HPA and Knative KPA (at its default utilization 0.7
//! and at 1.0) on the whole verdict matrix:
//! five standard traces × seeds 1–3 × two replica cost models × cold
//! starts of 30 s and 5 s (60 cases). Every case the README lists as won
//! must stay won; each known miss must stay within the margin the README
//! states, so a regression fails either way.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use parking_lot::Mutex;

use convoy_autoscale_sim::Controller as _;
use convoy_autoscale_sim::{
    dominations, standard_setups, verdict_contenders, Domination, Oracle, Report, Setup,
    Simulation, Trace, DOMINATED, TUNED,
};

/// A contender the default does not dominate in one case, and how far it
/// may miss.
struct KnownMiss {
    trace: &'static str,
    /// `"20ms"` (the default replica) or `"8ms"` (the GPU-like one).
    cost_model: &'static str,
    cold_start_s: u64,
    seed: u64,
    /// Against this contender (the others are still dominated).
    against: &'static str,
    /// At most this many more SLO-violating requests than the contender.
    extra_violating: u64,
    /// At most this many more replica-seconds than the contender.
    extra_replica_seconds: f64,
}

/// The step on the default replica (`20 ms + 5 ms·n`, batch 8) against
/// KPA at Knative's default utilization (0.7). The default holds 4
/// replicas at 200 requests/s when the step to 1 000 comes; on seed 2 KPA
/// happened to hold 8 or more (its flapping highs) and violated nothing.
/// See the README for why: a causal policy cannot win seed 2 without
/// losing the spike, nor seed 1 at 5 s without draining faster than
/// `convoy-autoscale`'s `tests/observe.rs` backlog test allows. KPA at
/// utilization 1.0, Ray and HPA are dominated in every case.
/// Margins: a little over the measured excess (32 407, 132 and 6 307
/// violating requests, no more replica-seconds).
const KNOWN_MISSES: [KnownMiss; 3] = [
    KnownMiss {
        trace: "step",
        cost_model: "20ms",
        cold_start_s: 30,
        seed: 2,
        against: "Kpa",
        extra_violating: 33_500,
        extra_replica_seconds: 0.0,
    },
    KnownMiss {
        trace: "step",
        cost_model: "20ms",
        cold_start_s: 5,
        seed: 1,
        against: "Kpa",
        extra_violating: 300,
        extra_replica_seconds: 0.0,
    },
    KnownMiss {
        trace: "step",
        cost_model: "20ms",
        cold_start_s: 5,
        seed: 2,
        against: "Kpa",
        extra_violating: 7_000,
        extra_replica_seconds: 0.0,
    },
];

/// The cases of the matrix.
const CASES: usize = 60;

/// Cases the default dominates every contender in: all but the known misses.
const WON: usize = 57;

fn known_misses(setup: &Setup, trace: &str) -> Vec<&'static KnownMiss> {
    KNOWN_MISSES
        .iter()
        .filter(|m| {
            setup.cost_model.starts_with(m.cost_model)
                && m.trace == trace
                && m.cold_start_s == setup.config.replica.cold_start.as_secs()
                && m.seed == setup.config.seed
        })
        .collect()
}

/// Every case's reports (Ray, HPA, both KPAs and the default), on all cores.
fn run_matrix(setups: &[Setup]) -> Vec<(usize, Trace, Vec<Report>)> {
    let cases: Vec<(usize, Trace)> = setups
        .iter()
        .enumerate()
        .flat_map(|(i, s)| s.traces().into_iter().map(move |t| (i, t)))
        .collect();
    let next = AtomicUsize::new(0);
    let done = Mutex::new(Vec::new());
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((si, trace)) = cases.get(i) else {
                    break;
                };
                let config = &setups[*si].config;
                let sim = Simulation::new(config.clone()).unwrap();
                let initial = Oracle::plan(trace, config).replicas_at(Duration::ZERO);
                let reports: Vec<Report> = verdict_contenders(config, initial)
                    .unwrap()
                    .into_iter()
                    .filter(|c| c.name() != TUNED)
                    .map(|mut c| sim.run(trace, &mut c))
                    .collect();
                done.lock().push((*si, trace.clone(), reports));
            });
        }
    });
    done.into_inner()
}

fn describe(setup: &Setup, trace: &str, d: &Domination) -> String {
    format!(
        "{trace} {} {}s seed {}: the default against {}: violating {} vs {}, replica-s {:.0} vs {:.0}",
        setup.cost_model,
        setup.config.replica.cold_start.as_secs(),
        setup.config.seed,
        d.against,
        d.violating.0,
        d.violating.1,
        d.replica_seconds.0,
        d.replica_seconds.1
    )
}

// About 3 minutes of CPU in a release build (7 minutes of wall time on a
// busy 2-core machine; the 12 day-long diurnal runs
// are 26 million simulated requests per policy each); far longer
// unoptimised.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "minutes even optimised: cargo test --release -p convoy-autoscale-sim --test default_policy"
)]
fn the_default_dominates_ray_hpa_and_kpa_except_the_known_step_misses() {
    let setups = standard_setups(&[1, 2, 3]);
    let results = run_matrix(&setups);
    assert_eq!(results.len(), CASES);
    let (mut won, mut missed) = (0, 0);
    for (si, trace, reports) in &results {
        let setup = &setups[*si];
        let doms = dominations(reports);
        assert_eq!(doms.len(), DOMINATED.len(), "{}", trace.name());
        let misses = known_misses(setup, trace.name());
        for d in &doms {
            let line = describe(setup, trace.name(), d);
            match misses.iter().find(|m| m.against == d.against) {
                None => assert!(d.holds(), "{line}"),
                // Within the stated margins.
                Some(miss) => {
                    assert!(
                        d.replica_seconds.0 <= d.replica_seconds.1 + miss.extra_replica_seconds,
                        "more than {} replica-seconds over: {line}",
                        miss.extra_replica_seconds
                    );
                    assert!(
                        d.violating.0 <= d.violating.1 + miss.extra_violating,
                        "misses by more than {}: {line}",
                        miss.extra_violating
                    );
                }
            }
        }
        if misses.is_empty() {
            won += 1;
        } else {
            missed += 1;
        }
    }
    assert_eq!((won, missed), (WON, CASES - WON));
}
