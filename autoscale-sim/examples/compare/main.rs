//! Run with `cargo run --release -p convoy-autoscale-sim --example compare`.
//!
//! 1. The standard setup (default replica, 30 s cold start, seed 1): every
//!    built-in and the default policy on every standard trace, as a
//!    Markdown table, and a plot of load, replicas and p99 over time on
//!    the spike and MMPP traces (`autoscale-sim/docs/compare.svg`).
//! 2. The verdict matrix: whether the default policy (`Adaptive` given
//!    only the SLO) Pareto-dominates Ray's default, HPA and KPA at both
//!    utilizations (no more
//!    SLO-violating requests and no more replica-seconds) on every trace,
//!    seed, cost model and cold start, with its ratio to the offline
//!    oracle and to the tuned `LatencySlo`.
//!
//! 3. The evidence for the step cases against KPA (default replica): the
//!    step and spike traces share their first 15 minutes; what KPA and the
//!    default hold there; and the default held at a floor of 6, 7 or 8
//!    replicas on both traces.
//!
//! All are printed and written into `autoscale-sim/README.md` between its
//! `compare-table`, `compare-verdict` and `compare-evidence` markers.
//!
//! Options: `--seeds 1,2,3` (default), `--models default,gpu`,
//! `--colds 30,5`, `--traces spike,step` (all by default; with it neither
//! the README nor the plot is written), `--quick` (only the default policy
//! in the matrix: the others' reports do not change while tuning it, but
//! then no verdict),
//! `--no-write` (print only), `--plot PATH`.

mod evidence;
mod plot;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use convoy_autoscale_sim::{
    builtin_contenders, comparison_table, default_contender, dominations, standard_setups,
    standard_traces, verdict_contenders, Contender, Oracle, Report, Setup, SimConfig, Simulation,
    Trace, DEFAULT_POLICY, DOMINATED, TUNED,
};
use parking_lot::Mutex;
use plot::Panel;

pub(crate) type Error = Box<dyn std::error::Error>;

struct Options {
    seeds: Vec<u64>,
    models: Vec<String>,
    colds: Vec<u64>,
    traces: Option<Vec<String>>,
    quick: bool,
    write: bool,
    plot: PathBuf,
}

fn options() -> Result<Options, Error> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut o = Options {
        seeds: vec![1, 2, 3],
        models: vec!["default".into(), "gpu".into()],
        colds: vec![30, 5],
        traces: None,
        quick: false,
        write: true,
        plot: dir.join("docs/compare.svg"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--seeds" => o.seeds = list(&value()?)?,
            "--colds" => o.colds = list(&value()?)?,
            "--models" => o.models = value()?.split(',').map(String::from).collect(),
            "--traces" => o.traces = Some(value()?.split(',').map(String::from).collect()),
            "--plot" => o.plot = PathBuf::from(value()?),
            "--quick" => o.quick = true,
            "--no-write" => o.write = false,
            other => return Err(format!("unknown option {other}").into()),
        }
    }
    Ok(o)
}

impl Options {
    /// Whether `--traces` names this trace (every trace without it).
    fn wants(&self, trace: &str) -> bool {
        self.traces
            .as_ref()
            .is_none_or(|names| names.iter().any(|n| n == trace))
    }
}

fn list(s: &str) -> Result<Vec<u64>, Error> {
    Ok(s.split(',')
        .map(str::parse)
        .collect::<Result<Vec<u64>, _>>()?)
}

/// Runs every (simulation, trace, contender) job on all cores; reports in
/// job order.
pub(crate) fn run_all(jobs: Vec<(Simulation, Trace, Contender)>) -> Vec<Report> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = AtomicUsize::new(0);
    let jobs: Vec<Mutex<(Simulation, Trace, Contender)>> =
        jobs.into_iter().map(Mutex::new).collect();
    let mut done: Vec<(usize, Report)> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..workers)
            .map(|_| {
                let (next, jobs) = (&next, &jobs);
                scope.spawn(move || {
                    let mut out = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(job) = jobs.get(i) else { break };
                        let mut job = job.lock();
                        let (sim, trace, contender) = &mut *job;
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
    done.into_iter().map(|(_, r)| r).collect()
}

fn main() -> Result<(), Error> {
    let opts = options()?;
    let config = SimConfig::default();
    let model = &config.replica;
    println!(
        "standard setup: cost(n) = {} ms + {} ms·n, max batch {}, {} slot(s), cold start {} s; \
         SLO {} ms; queue {}; seed {}; {:.0} requests/s per replica within the SLO\n",
        model.batch_overhead.as_millis(),
        model.per_item.as_millis(),
        model.max_batch_size,
        model.slots,
        model.cold_start.as_secs(),
        config.slo.as_millis(),
        config.queue_capacity,
        config.seed,
        model.capacity_rps(config.slo)
    );

    // 1. The standard setup: every built-in and the default.
    let traces = standard_traces();
    let mut jobs = Vec::new();
    for trace in traces.iter().filter(|t| opts.wants(t.name())) {
        let initial = Oracle::plan(trace, &config).replicas_at(Duration::ZERO);
        let mut contenders = if opts.quick {
            Vec::new()
        } else {
            builtin_contenders(&config, initial)?
        };
        contenders.push(default_contender(&config, initial)?);
        for c in contenders {
            jobs.push((Simulation::new(config.clone())?, trace.clone(), c));
        }
    }
    let reports = run_all(jobs);
    let table = comparison_table(&reports);
    println!("{table}");

    // 2. The verdict matrix.
    let setups: Vec<_> = standard_setups(&opts.seeds)
        .into_iter()
        .filter(|s| {
            let model = if s.cost_model.starts_with("20ms") {
                "default"
            } else {
                "gpu"
            };
            opts.models.iter().any(|m| m == model)
                && opts.colds.contains(&s.config.replica.cold_start.as_secs())
        })
        .collect();
    let mut jobs = Vec::new();
    let mut keys = Vec::new();
    let setup_traces: Vec<Vec<Trace>> = setups.iter().map(Setup::traces).collect();
    for (si, setup) in setups.iter().enumerate() {
        for trace in &setup_traces[si] {
            if !opts.wants(trace.name()) {
                continue;
            }
            let initial = Oracle::plan(trace, &setup.config).replicas_at(Duration::ZERO);
            let contenders = if opts.quick {
                vec![default_contender(&setup.config, initial)?]
            } else {
                verdict_contenders(&setup.config, initial)?
            };
            for c in contenders {
                keys.push((si, trace.name().to_string()));
                jobs.push((Simulation::new(setup.config.clone())?, trace.clone(), c));
            }
        }
    }
    let matrix = run_all(jobs);
    let mut groups: BTreeMap<(usize, usize), Vec<Report>> = BTreeMap::new();
    let order = ["spike", "mmpp", "diurnal", "step", "ramp"];
    for ((si, trace), r) in keys.into_iter().zip(matrix) {
        let ti = order
            .iter()
            .position(|t| *t == trace)
            .unwrap_or(order.len());
        groups.entry((ti, si)).or_default().push(r);
    }
    let mut verdict = String::new();
    let (mut held, mut cases) = (0, 0);
    verdict.push_str(&format!(
        "{:8} {:16} {:>4} {:>5}  {:>9} {:>9}  {:>6}  vs {:28} | {:>9} {:>9}  verdict\n",
        "trace",
        "cost model",
        "cold",
        "seed",
        "violating",
        "replica-s",
        "oracle",
        "each contender: violating, replica-s",
        "tuned viol",
        "tuned r-s"
    ));
    for ((_, si), reports) in &groups {
        let setup = &setups[*si];
        let Some(ours) = reports.iter().find(|r| r.policy == DEFAULT_POLICY) else {
            continue;
        };
        let doms = dominations(reports);
        let against: Vec<String> = doms
            .iter()
            .map(|d| {
                format!(
                    "{} {}/{:.0}",
                    short(&d.against),
                    d.violating.1,
                    d.replica_seconds.1
                )
            })
            .collect();
        let tuned = reports.iter().find(|r| r.policy == TUNED);
        let all = doms.len() == DOMINATED.len() && doms.iter().all(|d| d.holds());
        let word = if doms.is_empty() {
            "-".to_string()
        } else if all {
            "DOMINATES".to_string()
        } else {
            let missed: Vec<String> = doms.iter().filter(|d| !d.holds()).map(miss).collect();
            format!("misses {}", missed.join("; "))
        };
        if !doms.is_empty() {
            cases += 1;
            held += usize::from(all);
        }
        verdict.push_str(&format!(
            "{:8} {:16} {:>3}s {:>5}  {:>9} {:>9.0}  {:>5.2}x  vs {} | {:>9} {:>9}  {}\n",
            ours.trace,
            setup.cost_model,
            setup.config.replica.cold_start.as_secs(),
            setup.config.seed,
            ours.violating(),
            ours.replica_seconds,
            ours.oracle_ratio(),
            against.join(", "),
            tuned.map_or("-".into(), |t| t.violating().to_string()),
            tuned.map_or("-".into(), |t| format!(
                "{:.2}x",
                ours.replica_seconds / t.replica_seconds
            )),
            word
        ));
    }
    verdict.push_str(&format!(
        "\ndominates Ray's default, HPA and KPA (utilization 0.7 and 1.0) in {held} of {cases} cases\n"
    ));
    println!("{verdict}");

    // 3. The step cases against KPA: the evidence (default replica only).
    let mut cases = Vec::new();
    for (si, setup) in setups.iter().enumerate() {
        let named = |name: &str| setup_traces[si].iter().find(|t| t.name() == name);
        let (Some(spike), Some(step)) = (named("spike"), named("step")) else {
            continue;
        };
        let (Some(spike_runs), Some(step_runs)) = (groups.get(&(0, si)), groups.get(&(3, si)))
        else {
            continue;
        };
        if setup.cost_model.starts_with("20ms") && !opts.quick {
            cases.push(evidence::Case {
                setup,
                spike: (spike, spike_runs),
                step: (step, step_runs),
            });
        }
    }
    let evidence = if cases.is_empty() {
        None
    } else {
        let text = evidence::step_evidence(&cases)?;
        println!("{text}");
        Some(text)
    };

    if !opts.quick && opts.traces.is_none() {
        draw(&opts, &traces, &reports, &config)?;
        if opts.write {
            let readme = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("README.md");
            let text = std::fs::read_to_string(&readme)?;
            let text = replace_between(&text, "compare-table", &table)?;
            let text =
                replace_between(&text, "compare-verdict", &format!("```text\n{verdict}```"))?;
            let text = match &evidence {
                Some(e) => replace_between(&text, "compare-evidence", &format!("```text\n{e}```"))?,
                None => text,
            };
            std::fs::write(&readme, text)?;
            println!("README table and verdict refreshed");
        }
    }
    Ok(())
}

fn short(policy: &str) -> &str {
    match policy {
        "TargetOngoing (Ray default)" => "Ray",
        "Kpa (utilization 1.0)" => "Kpa 1.0",
        other => other,
    }
}

/// By how much a domination misses: the excess violations and cost.
fn miss(d: &convoy_autoscale_sim::Domination) -> String {
    let mut parts = Vec::new();
    if d.violating.0 > d.violating.1 {
        parts.push(format!("+{} violating", d.violating.0 - d.violating.1));
    }
    if d.replica_seconds.0 > d.replica_seconds.1 {
        parts.push(format!(
            "+{:.1} % replica-s",
            100.0 * (d.replica_seconds.0 / d.replica_seconds.1 - 1.0)
        ));
    }
    format!("{} ({})", short(&d.against), parts.join(", "))
}

/// Replaces what lies between `<!-- name -->` and `<!-- /name -->`.
fn replace_between(text: &str, name: &str, body: &str) -> Result<String, Error> {
    let open = format!("<!-- {name} -->\n");
    let close = format!("<!-- /{name} -->");
    let start = text.find(&open).ok_or(format!("no {open:?} in README"))? + open.len();
    let end = text[start..]
        .find(&close)
        .ok_or(format!("no {close:?} in README"))?
        + start;
    Ok(format!(
        "{}{}\n{}",
        &text[..start],
        body.trim_end(),
        &text[end..]
    ))
}

fn draw(
    opts: &Options,
    traces: &[Trace],
    reports: &[Report],
    config: &SimConfig,
) -> Result<(), Error> {
    if let Some(dir) = opts.plot.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let oracles: Vec<(&Trace, Oracle)> = traces
        .iter()
        .filter(|t| ["spike", "mmpp"].contains(&t.name()))
        .map(|t| (t, Oracle::plan(t, config)))
        .collect();
    let panels: Vec<Panel<'_>> = oracles
        .iter()
        .map(|(trace, oracle)| Panel {
            trace: trace.name(),
            reports: reports.iter().filter(|r| r.trace == trace.name()).collect(),
            oracle: oracle.replicas_per_minute(),
        })
        .collect();
    plot::draw(&opts.plot, &panels, config.slo)?;
    println!("plot written to {}", opts.plot.display());
    Ok(())
}
