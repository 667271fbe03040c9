//! convoy-autoscale-sim: a deterministic discrete-event simulator for
//! [`convoy_autoscale`]: replay a load trace against a policy and see its
//! cost and SLO before production, and measure policies against each other.
//!
//! It is a crate of its own so that the runtime crate every server links
//! carries no simulator and no RNG.
//!
//! A [`Trace`] is a known arrival rate over time (step, ramp, spike,
//! diurnal sine, bursty MMPP-2, or CSV counts); requests arrive as a seeded
//! Poisson process with that rate. Replicas follow a [`ReplicaModel`]:
//! concurrency slots, a batched service-time curve `cost(n) = a + b·n`
//! with batch-when-busy, and a cold start. Each sample interval the
//! simulator feeds a [`Controller`] (usually an [`Engine`](convoy_autoscale::Engine))
//! a [`LoadSample`](convoy_autoscale::LoadSample) and, each of its intervals, applies
//! the replica count it asks for: new replicas serve
//! after their cold start, removed ones finish their in-flight batches.
//!
//! The [`Report`] counts SLO-violating requests, one-minute windows with
//! p99 over the SLO, replica-seconds against an offline [`Oracle`], cold
//! starts, direction changes and drops. Virtual time, a seeded RNG and no
//! per-request allocation make runs exact and fast: same seed, same report.
//!
//! ```
//! use std::time::Duration;
//! use convoy_autoscale_sim::{FixedReplicas, SimConfig, Simulation, Trace};
//!
//! let sim = Simulation::new(SimConfig::default()).unwrap();
//! let trace = Trace::step(100.0, 400.0, Duration::from_secs(120), Duration::from_secs(600)).unwrap();
//! let small = sim.run(&trace, &mut FixedReplicas::new(1));
//! let large = sim.run(&trace, &mut FixedReplicas::new(4));
//! assert!(large.violating() < small.violating());
//! assert!(large.replica_seconds > small.replica_seconds);
//! ```

// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod config;
mod oracle;
mod report;
mod run;
mod standard;
mod trace;

#[cfg(test)]
mod tests;

pub use config::{ReplicaModel, SimConfig, SimConfigBuilder, SimConfigError};
pub use oracle::Oracle;
pub use report::{comparison_table, Report, TimelinePoint};
pub use run::{Controller, FixedReplicas, Simulation};
pub use standard::{
    builtin_contenders, default_contender, dominations, standard_setups, standard_traces,
    verdict_contenders, Contender, Domination, Setup, DEFAULT_POLICY, DOMINATED,
    KPA_FULL_UTILIZATION, RAY_METRICS_PUSH, STANDARD_MAX_REPLICAS, TUNED,
};
pub use trace::{
    Arrivals, CsvResolution, Mmpp, Spike, Trace, TraceError, TraceErrorKind, MAX_RATE,
    MAX_TRACE_DURATION, MAX_TRACE_STEPS,
};
