//! The evidence behind the step cases the default cannot win against KPA:
//! the step and spike traces share their first 15 minutes, so a policy
//! that reads only the load decides the same there on both, and the
//! capacity that would have caught the step at 15 minutes costs more on
//! the spike than KPA spends.

use std::time::Duration;

use convoy_autoscale::{Adaptive, EngineConfig};
use convoy_autoscale_sim::{
    Contender, Oracle, Report, Setup, Simulation, Trace, DEFAULT_POLICY, STANDARD_MAX_REPLICAS,
};

use crate::{run_all, Error};

/// When the step comes (and the two traces part).
const STEP_AT: Duration = Duration::from_secs(15 * 60);
/// Floors tried: the default held at no fewer than this many replicas.
pub(crate) const FLOORS: [u32; 3] = [6, 7, 8];

/// One setup's runs: KPA and the default on the spike and the step.
pub(crate) struct Case<'a> {
    pub(crate) setup: &'a Setup,
    pub(crate) spike: (&'a Trace, &'a [Report]),
    pub(crate) step: (&'a Trace, &'a [Report]),
}

/// The default, never below `floor` replicas.
fn with_floor(setup: &Setup, trace: &Trace, floor: u32) -> Result<Contender, Error> {
    let initial = Oracle::plan(trace, &setup.config).replicas_at(Duration::ZERO);
    let engine = EngineConfig::default()
        .min_replicas(floor)
        .max_replicas(STANDARD_MAX_REPLICAS)
        .initial_replicas(Some(initial.clamp(floor, STANDARD_MAX_REPLICAS)))
        .upscale_delay(Duration::ZERO)
        .downscale_delay(Duration::ZERO);
    Ok(Contender::build(
        format!("floor {floor}"),
        engine,
        Adaptive::for_slo(setup.config.slo)?,
    )?)
}

fn find<'a>(reports: &'a [Report], policy: &str) -> Result<&'a Report, Error> {
    reports
        .iter()
        .find(|r| r.policy == policy)
        .ok_or_else(|| format!("no {policy} report").into())
}

/// Whether two runs saw the same arrivals and held the same replicas up to
/// the step.
fn same_prefix(a: &Report, b: &Report) -> bool {
    let prefix = |r: &Report| -> Vec<(u64, u32)> {
        r.timeline
            .iter()
            .take_while(|p| p.at <= STEP_AT)
            .map(|p| (p.arrival_rps.to_bits(), p.replicas))
            .collect()
    };
    prefix(a) == prefix(b)
}

/// Ready replicas at the step, and replica-seconds before it (10 s points).
fn at_step(r: &Report) -> (u32, f64) {
    let mut spent = 0.0;
    let mut previous = Duration::ZERO;
    let mut ready = 0;
    for p in r.timeline.iter().take_while(|p| p.at <= STEP_AT) {
        spent += f64::from(p.replicas) * (p.at - previous).as_secs_f64();
        previous = p.at;
        ready = p.ready;
    }
    (ready, spent)
}

/// The evidence table, one line per setup.
pub(crate) fn step_evidence(cases: &[Case<'_>]) -> Result<String, Error> {
    let mut jobs = Vec::new();
    for case in cases {
        for floor in FLOORS {
            for trace in [case.step.0, case.spike.0] {
                jobs.push((
                    Simulation::new(case.setup.config.clone())?,
                    trace.clone(),
                    with_floor(case.setup, trace, floor)?,
                ));
            }
        }
    }
    let floors = run_all(jobs);
    let mut out = String::new();
    out.push_str(&format!(
        "{:>4} {:>4}  {:>6}  {:>17}  {:>20}  {:>17}  {:>20}  {}\n",
        "cold",
        "seed",
        "prefix",
        "ready at 15 min",
        "prefix replica-s",
        "step violating",
        "KPA on the spike",
        "the default never below k replicas: step violating | spike violating/replica-s"
    ));
    out.push_str(&format!(
        "{:>4} {:>4}  {:>6}  {:>17}  {:>20}  {:>17}  {:>20}\n",
        "", "", "", "KPA / default", "KPA / default", "default / KPA", "violating/replica-s"
    ));
    for (case, runs) in cases.iter().zip(floors.chunks(2 * FLOORS.len())) {
        let kpa_step = find(case.step.1, "Kpa")?;
        let ours_step = find(case.step.1, DEFAULT_POLICY)?;
        let kpa_spike = find(case.spike.1, "Kpa")?;
        let ours_spike = find(case.spike.1, DEFAULT_POLICY)?;
        let identical = (0..STEP_AT.as_secs()).all(|t| {
            let t = Duration::from_secs(t);
            case.step.0.rate_at(t) == case.spike.0.rate_at(t)
        }) && same_prefix(ours_step, ours_spike)
            && same_prefix(kpa_step, kpa_spike);
        let (kpa_ready, kpa_spent) = at_step(kpa_step);
        let (our_ready, our_spent) = at_step(ours_step);
        let tried: Vec<String> = FLOORS
            .iter()
            .zip(runs.chunks(2))
            .map(|(k, pair)| {
                format!(
                    "{k}: {} | {}/{:.0}",
                    pair[0].violating(),
                    pair[1].violating(),
                    pair[1].replica_seconds
                )
            })
            .collect();
        out.push_str(&format!(
            "{:>3}s {:>4}  {:>6}  {:>17}  {:>20}  {:>17}  {:>20}  {}\n",
            case.setup.config.replica.cold_start.as_secs(),
            case.setup.config.seed,
            if identical { "same" } else { "DIFFERS" },
            format!("{kpa_ready} / {our_ready}"),
            format!("{kpa_spent:.0} / {our_spent:.0}"),
            format!("{} / {}", ours_step.violating(), kpa_step.violating()),
            format!("{}/{:.0}", kpa_spike.violating(), kpa_spike.replica_seconds),
            tried.join(";  ")
        ));
    }
    Ok(out)
}
