//! The standard traces and the built-in policies as the comparison runs
//! them.

use std::collections::VecDeque;
use std::time::Duration;

use crate::config::SimConfig;
use crate::run::Controller;
use crate::trace::{Mmpp, Spike, Trace};
use convoy_autoscale::{
    Adaptive, BatchCost, ConfigError, Engine, EngineConfig, Hpa, HpaConfig, Kpa, KpaConfig,
    LatencySlo, LatencySloConfig, LoadSample, Max, Policy, QueueModel, QueueModelConfig,
    ReplicaCounts, TargetOngoing, TargetOngoingConfig,
};

const fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// The standard traces, sized for the default [`ReplicaModel`](crate::ReplicaModel)
/// (about 133 requests/s per replica at the default SLO):
///
/// | name | shape | length |
/// |---|---|---|
/// | `spike` | 200 rps, ramp over 30 s to 5x at 20 min, hold 5 min, ramp back | 1 h |
/// | `mmpp` | MMPP-2: 150 rps calm (mean 10 min), 8x bursts (mean 2 min) | 2 h |
/// | `diurnal` | sine around 300 rps, ±80 %, 24 h period | 24 h |
/// | `step` | 200 rps, then 1000 rps from 15 min | 1 h |
/// | `ramp` | 100 rps, linear to 1500 rps from 10 to 40 min | 1 h |
pub fn standard_traces() -> Vec<Trace> {
    let traces = [
        Trace::spike(Spike {
            base_rps: 200.0,
            magnitude: 5.0,
            start: secs(20 * 60),
            ramp: secs(30),
            hold: secs(5 * 60),
            duration: secs(3600),
        }),
        Trace::mmpp(Mmpp {
            base_rps: 150.0,
            burst_factor: 8.0,
            mean_calm: secs(600),
            mean_burst: secs(120),
            duration: secs(2 * 3600),
            seed: 42,
        }),
        Trace::diurnal(300.0, 0.8, secs(86_400), secs(86_400)),
        Trace::step(200.0, 1000.0, secs(15 * 60), secs(3600)),
        Trace::ramp(100.0, 1500.0, secs(10 * 60), secs(30 * 60), secs(3600)),
    ];
    traces
        .into_iter()
        .map(|t| t.expect("standard trace parameters are valid"))
        .collect()
}

/// An [`Engine`] with the name it carries in reports, and optionally the
/// cadence at which its load samples reach it.
#[derive(Debug)]
pub struct Contender {
    name: String,
    engine: Engine,
    push: Option<MetricsPush>,
}

/// Samples held back until the next push, as replicas that record their
/// load locally and push it to the controller every `interval`.
#[derive(Debug)]
struct MetricsPush {
    interval: Duration,
    next: Duration,
    held: VecDeque<(Duration, LoadSample)>,
}

/// Bound on samples held between two pushes (memory stays bounded however
/// often samples come).
const MAX_HELD: usize = 4096;

impl Contender {
    /// Wraps `engine` under `name`.
    pub fn new(name: impl Into<String>, engine: Engine) -> Self {
        Self {
            name: name.into(),
            engine,
            push: None,
        }
    }

    /// Builds an engine from `config` and `policy`.
    pub fn build(
        name: impl Into<String>,
        config: EngineConfig,
        policy: impl Policy + 'static,
    ) -> Result<Self, ConfigError> {
        Ok(Self::new(name, Engine::new(config, Box::new(policy))?))
    }

    /// Hands the engine its samples only every `interval` (at `interval`,
    /// `2 · interval`, ...), each push carrying every sample recorded since
    /// the previous one with the time it was taken. Between pushes the
    /// engine decides on what was last pushed, and a policy's look-back
    /// averages the pushed samples. Ray Serve's replicas push their
    /// autoscaling metrics to the controller every 10 s
    /// (`RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`). A zero
    /// interval hands over every sample at once.
    pub fn with_metrics_push(mut self, interval: Duration) -> Self {
        self.push = (!interval.is_zero()).then(|| MetricsPush {
            interval,
            next: interval,
            held: VecDeque::new(),
        });
        self
    }

    /// The push interval set by [`with_metrics_push`](Self::with_metrics_push).
    pub fn metrics_push(&self) -> Option<Duration> {
        self.push.as_ref().map(|p| p.interval)
    }

    /// The engine.
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Controller for Contender {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval(&self) -> Duration {
        Controller::interval(&self.engine)
    }
    fn initial_replicas(&self) -> u32 {
        Controller::initial_replicas(&self.engine)
    }
    fn observe(&mut self, now: Duration, sample: &LoadSample) {
        let Some(push) = &mut self.push else {
            Controller::observe(&mut self.engine, now, sample);
            return;
        };
        if push.held.len() == MAX_HELD {
            push.held.pop_front();
        }
        push.held.push_back((now, *sample));
        if now >= push.next {
            for (at, sample) in push.held.drain(..) {
                Controller::observe(&mut self.engine, at, &sample);
            }
            while push.next <= now {
                push.next += push.interval;
            }
        }
    }
    fn desired(&mut self, now: Duration, counts: ReplicaCounts) -> u32 {
        Controller::desired(&mut self.engine, now, counts)
    }
}

/// How often Ray Serve's replicas push their load to the controller
/// (`RAY_SERVE_REPLICA_AUTOSCALING_METRIC_PUSH_INTERVAL_S`, 10 s).
pub const RAY_METRICS_PUSH: Duration = secs(10);

/// The name of KPA at 100 % target utilisation in the comparison.
pub const KPA_FULL_UTILIZATION: &str = "Kpa (utilization 1.0)";

/// Upper bound on replicas for every contender.
pub const STANDARD_MAX_REPLICAS: u32 = 64;

/// The built-in policies, each in the engine configuration its semantics
/// come from, sized for `config`'s replica model and SLO:
///
/// - `TargetOngoing (Ray default)`: Ray Serve's defaults: 2 ongoing requests
///   per replica, 30 s look-back over the samples its replicas pushed (every
///   10 s, [`Contender::with_metrics_push`]), upscale delay 30 s, downscale
///   delay 600 s.
/// - `Hpa`: Kubernetes defaults (15 s sync period, tolerance 0.1, 300 s
///   scale-down stabilization, 4 pods / 100 % per 15 s up) on 2 ongoing
///   requests per replica, like Ray.
/// - `Kpa`: Knative defaults (2 s tick, 60 s stable, 6 s panic window,
///   panic at 200 %, 70 % target utilisation, scale up ≤ 1000x and down
///   ≤ 2x per tick) on a concurrency target of 2 per replica (Knative's
///   default of 100 is meant for web servers, not a replica that batches
///   8): at 70 % it aims at 1.4 in flight per replica.
/// - `Kpa (utilization 1.0)`: the same at 100 % target utilisation, so it
///   aims at 2 in flight per replica: Ray's and HPA's operating point.
/// - `LatencySlo`: convoy defaults (p99 averaged over 10 s, up at most 2x
///   per decision, down 10 % when under half the target) with the SLO as
///   its target; no upscale delay, 60 s downscale delay.
/// - `QueueModel`: convoy defaults (80 % utilisation, 30 s and 5 s rate
///   look-backs, 10 s backlog drain) given the replica's batch cost curve,
///   batch size and slots, and learning the curve online; no upscale
///   delay, 60 s downscale delay.
/// - `LatencySlo (SLO/4, 4x)`: LatencySlo aiming at a quarter of the SLO
///   and growing up to 4x per decision. In a batching replica p99 stays
///   flat until utilisation nears 1 and then explodes, so a target well
///   under the SLO is what buys headroom for bursts that outrun a cold
///   start.
/// - `Max(LatencySlo, QueueModel)`: both defaults, the larger wins.
///
/// Ray, HPA and KPA run without the engine's
/// [`hold_down_while_starting`](convoy_autoscale::EngineConfig::hold_down_while_starting):
/// none of the three upstreams holds a scale-down while replicas start.
/// Every contender is bounded to `[1, STANDARD_MAX_REPLICAS]` and starts
/// with `initial_replicas` ready (clamped to the bounds); a fair start sizes
/// it for the trace's initial load, e.g. with
/// [`Oracle::replicas_at`](crate::Oracle::replicas_at) at time zero.
pub fn builtin_contenders(
    config: &SimConfig,
    initial_replicas: u32,
) -> Result<Vec<Contender>, ConfigError> {
    let base = EngineConfig::default()
        .max_replicas(STANDARD_MAX_REPLICAS)
        .initial_replicas(Some(initial_replicas.clamp(1, STANDARD_MAX_REPLICAS)));
    let peer = base.clone().hold_down_while_starting(false);
    let convoy = base
        .clone()
        .upscale_delay(Duration::ZERO)
        .downscale_delay(secs(60));
    let model = &config.replica;

    let latency_slo = || LatencySlo::new(LatencySloConfig::default().target(config.slo));
    let queue_model = || {
        QueueModel::new(
            QueueModelConfig::default()
                .slo(config.slo)
                .cost(Some(BatchCost::new(model.batch_overhead, model.per_item)))
                .max_batch_size(model.max_batch_size)
                .concurrency(model.slots),
        )
    };
    Ok(vec![
        Contender::build(
            "TargetOngoing (Ray default)",
            peer.clone(),
            TargetOngoing::new(TargetOngoingConfig::default())?,
        )?
        .with_metrics_push(RAY_METRICS_PUSH),
        Contender::build(
            "Hpa",
            peer.clone().no_delays().interval(secs(15)),
            Hpa::new(HpaConfig::default())?,
        )?,
        Contender::build(
            "Kpa",
            peer.clone().no_delays().interval(secs(2)),
            Kpa::new(KpaConfig::default().target(2.0))?,
        )?,
        Contender::build(
            KPA_FULL_UTILIZATION,
            peer.no_delays().interval(secs(2)),
            Kpa::new(KpaConfig::default().target(2.0).target_utilization(1.0))?,
        )?,
        Contender::build("LatencySlo", convoy.clone(), latency_slo()?)?,
        Contender::build("QueueModel", convoy.clone(), queue_model()?)?,
        Contender::build(
            "LatencySlo (SLO/4, 4x)",
            convoy.clone(),
            LatencySlo::new(
                LatencySloConfig::default()
                    .target(config.slo / 4)
                    .max_scale_up_factor(4.0),
            )?,
        )?,
        Contender::build(
            "Max(LatencySlo, QueueModel)",
            convoy,
            Max::new(vec![Box::new(latency_slo()?), Box::new(queue_model()?)])?,
        )?,
    ])
}

/// The name of the default policy in the comparison.
pub const DEFAULT_POLICY: &str = "Adaptive (default)";

/// The contenders the default policy must Pareto-dominate: Ray's default,
/// HPA, and KPA at Knative's default utilisation and at 1.0.
pub const DOMINATED: [&str; 4] = [
    "TargetOngoing (Ray default)",
    "Hpa",
    "Kpa",
    KPA_FULL_UTILIZATION,
];

/// The tuned reference the default is also reported against.
pub const TUNED: &str = "LatencySlo (SLO/4, 4x)";

/// The default policy as the comparison runs it: [`Adaptive`] given only
/// the SLO, in convoy's engine configuration (bounds `[1, 64]`, no upscale
/// delay; the policy holds scale-downs itself, so the engine adds none).
pub fn default_contender(
    config: &SimConfig,
    initial_replicas: u32,
) -> Result<Contender, ConfigError> {
    let engine = EngineConfig::default()
        .max_replicas(STANDARD_MAX_REPLICAS)
        .initial_replicas(Some(initial_replicas.clamp(1, STANDARD_MAX_REPLICAS)))
        .upscale_delay(Duration::ZERO)
        .downscale_delay(Duration::ZERO);
    Contender::build(DEFAULT_POLICY, engine, Adaptive::for_slo(config.slo)?)
}

/// A cost model and cold start of the verdict matrix.
#[derive(Debug, Clone, PartialEq)]
pub struct Setup {
    /// `"20ms+5ms·n b8"` (the default replica) or `"8ms+0.5ms·n b64"` (GPU-like).
    pub cost_model: &'static str,
    /// The simulator configuration (replica model, cold start, seed).
    pub config: SimConfig,
    /// Factor applied to the standard traces' rates (1 in
    /// [`standard_setups`]: the traces as they are).
    pub trace_scale: f64,
}

impl Setup {
    /// The standard traces scaled for this setup.
    pub fn traces(&self) -> Vec<Trace> {
        standard_traces()
            .iter()
            .map(|t| {
                t.scaled(self.trace_scale)
                    .expect("a finite positive scale keeps a valid trace")
            })
            .collect()
    }
}

/// The verdict matrix: the two cost models (the default replica,
/// `20 ms + 5 ms·n` with batch 8, and a GPU-like one, `8 ms + 0.5 ms·n`
/// with batch 64) × two cold starts (30 s and 5 s) × `seeds`, on the
/// standard traces as they are. The GPU-like replica carries 1 600
/// requests/s within the SLO, so one or two replicas carry every trace:
/// that half checks that a policy does not overprovision a fast replica.
pub fn standard_setups(seeds: &[u64]) -> Vec<Setup> {
    let base = SimConfig::default();
    let gpu = crate::ReplicaModel {
        max_batch_size: 64,
        batch_overhead: Duration::from_millis(8),
        per_item: Duration::from_micros(500),
        ..crate::ReplicaModel::default()
    };
    let mut out = Vec::new();
    for (cost_model, replica) in [("20ms+5ms·n b8", base.replica), ("8ms+0.5ms·n b64", gpu)] {
        for cold in [secs(30), secs(5)] {
            for &seed in seeds {
                let replica = crate::ReplicaModel {
                    cold_start: cold,
                    ..replica
                };
                let config = SimConfig {
                    seed,
                    replica,
                    ..base.clone()
                };
                out.push(Setup {
                    cost_model,
                    trace_scale: 1.0,
                    config,
                });
            }
        }
    }
    out
}

/// The contenders of the verdict: the three the default must dominate, the
/// default, and the tuned `LatencySlo` for reference.
pub fn verdict_contenders(
    config: &SimConfig,
    initial_replicas: u32,
) -> Result<Vec<Contender>, ConfigError> {
    let mut out: Vec<Contender> = builtin_contenders(config, initial_replicas)?
        .into_iter()
        .filter(|c| DOMINATED.contains(&c.name.as_str()) || c.name == TUNED)
        .collect();
    out.push(default_contender(config, initial_replicas)?);
    Ok(out)
}

/// How the default fared against one contender on one run.
#[derive(Debug, Clone, PartialEq)]
pub struct Domination {
    /// The contender.
    pub against: String,
    /// SLO-violating requests (over SLO, dropped or unserved): the default's, the contender's.
    pub violating: (u64, u64),
    /// Replica-seconds: the default's, the contender's.
    pub replica_seconds: (f64, f64),
}

impl Domination {
    /// No more violating requests and no more replica-seconds.
    pub fn holds(&self) -> bool {
        self.violating.0 <= self.violating.1 && self.replica_seconds.0 <= self.replica_seconds.1
    }
}

/// The default against each of [`DOMINATED`] in `reports` (one trace, one
/// setup); empty when the default or a contender is missing.
pub fn dominations(reports: &[crate::Report]) -> Vec<Domination> {
    let Some(ours) = reports.iter().find(|r| r.policy == DEFAULT_POLICY) else {
        return Vec::new();
    };
    DOMINATED
        .iter()
        .filter_map(|name| reports.iter().find(|r| r.policy == *name))
        .map(|r| Domination {
            against: r.policy.clone(),
            violating: (ours.violating(), r.violating()),
            replica_seconds: (ours.replica_seconds, r.replica_seconds),
        })
        .collect()
}
