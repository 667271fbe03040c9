//! Run with `cargo run --release -p convoy-autoscale --example compare`.
//!
//! Replays the standard traces (spike, MMPP, diurnal, step, ramp) against
//! every built-in policy, prints the comparison table (Markdown) and writes
//! a plot of load, replicas and p99 over time on the spike and MMPP traces
//! to `autoscale/docs/compare.png` (or the path given as first argument).

mod plot;

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use convoy_autoscale::sim::{
    builtin_contenders, comparison_table, standard_traces, Contender, Oracle, Report, SimConfig,
    Simulation, Trace,
};
use parking_lot::Mutex;
use plot::Panel;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let config = SimConfig::default();
    let sim = Simulation::new(config.clone())?;
    let model = &config.replica;
    println!(
        "replica: cost(n) = {} ms + {} ms·n, max batch {}, {} slot(s), cold start {} s; \
         SLO {} ms; queue {}; seed {}",
        model.batch_overhead.as_millis(),
        model.per_item.as_millis(),
        model.max_batch_size,
        model.slots,
        model.cold_start.as_secs(),
        config.slo.as_millis(),
        config.queue_capacity,
        config.seed,
    );
    println!(
        "SLO-feasible capacity per replica: {:.0} requests/s\n",
        model.capacity_rps(config.slo)
    );

    // Every (trace, policy) run is independent and deterministic: run them
    // on all cores, then report in a fixed order.
    let traces = standard_traces();
    let mut jobs = Vec::new();
    for trace in &traces {
        // Every policy starts where an operator would have left it: sized
        // for the trace's initial load.
        let initial = Oracle::plan(trace, &config).replicas_at(Duration::ZERO);
        for contender in builtin_contenders(&config, initial)? {
            jobs.push((trace, contender));
        }
    }
    // Workers take the next job as they finish one (the 24 h diurnal runs
    // are much longer than the others), and results go back to job order.
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let jobs: Vec<Mutex<(&Trace, Contender)>> = jobs.into_iter().map(Mutex::new).collect();
    let mut done: Vec<(usize, Report)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (sim, next, jobs) = (&sim, &next, &jobs);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let mut job = job.lock();
                        let (trace, contender) = &mut *job;
                        out.push((i, sim.run(trace, contender)));
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().expect("simulation threads do not panic"))
            .collect()
    });
    done.sort_by_key(|(i, _)| *i);
    let reports: Vec<Report> = done.into_iter().map(|(_, r)| r).collect();
    println!("{}", comparison_table(&reports));
    print_verdict(&reports);

    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("docs/compare.png"));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let oracles: Vec<(&Trace, Oracle)> = traces
        .iter()
        .filter(|t| ["spike", "mmpp"].contains(&t.name()))
        .map(|t| (t, Oracle::plan(t, &config)))
        .collect();
    let panels: Vec<Panel<'_>> = oracles
        .iter()
        .map(|(trace, oracle)| Panel {
            trace: trace.name(),
            reports: reports.iter().filter(|r| r.trace == trace.name()).collect(),
            oracle: oracle.replicas_per_minute(),
        })
        .collect();
    plot::draw(&out, &panels, config.slo)?;
    println!("plot written to {}", out.display());
    Ok(())
}

/// The target: `LatencySlo` or `QueueModel` with at most half the
/// SLO-violating requests of the Ray default at most 1.1x its replica-seconds.
fn print_verdict(reports: &[Report]) {
    println!(
        "target: ≤ 0.5x the violating requests of Ray's default at ≤ 1.1x its replica-seconds"
    );
    for trace in ["spike", "mmpp", "diurnal", "step", "ramp"] {
        let find = |policy: &str| {
            reports
                .iter()
                .find(|r| r.trace == trace && r.policy == policy)
        };
        let Some(ray) = find("TargetOngoing (Ray default)") else {
            continue;
        };
        for policy in [
            "LatencySlo",
            "QueueModel",
            "LatencySlo (SLO/4, 4x)",
            "Max(LatencySlo, QueueModel)",
        ] {
            let Some(r) = find(policy) else { continue };
            // Ray served everything: any violation is infinitely worse.
            let violations = match (ray.violating(), r.violating()) {
                (0, 0) => 0.0,
                (0, _) => f64::INFINITY,
                (ray, r) => r as f64 / ray as f64,
            };
            let cost = r.replica_seconds / ray.replica_seconds;
            let met = violations <= 0.5 && cost <= 1.1;
            let shown = if violations.is_finite() {
                format!("{violations:6.2}x")
            } else {
                format!("{:>7}", format!("{}:0", r.violating()))
            };
            println!(
                "  {trace:8} {policy:28} violations {shown}  replica-s {cost:5.2}x  {}",
                if met { "MET" } else { "not met" }
            );
        }
    }
    println!();
}
