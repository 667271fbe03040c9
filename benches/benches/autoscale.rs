//! convoy-autoscale benchmarks: decision time per built-in policy and
//! simulator speed.
//!
//! Run with `cargo bench -p convoy-benches --bench autoscale`.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use convoy_autoscale::{
    Adaptive, BatchCost, Engine, EngineConfig, Hpa, HpaConfig, Kpa, KpaConfig, LatencySlo,
    LatencySloConfig, LoadSample, Max, Policy, PolicyInput, QueueModel, QueueModelConfig,
    ReplicaCounts, TargetOngoing, TargetOngoingConfig, Window,
};
use convoy_autoscale_sim::{
    builtin_contenders, FixedReplicas, Mmpp, Oracle, SimConfig, Simulation, Trace,
};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

/// A sample as the simulator produces it: a busy deployment, one per second.
fn sample(t: u64) -> LoadSample {
    let wobble = (t % 7) as f64;
    let batches = 40 + t % 5;
    let items = batches * (4 + t % 3);
    LoadSample {
        ongoing: 30.0 + wobble,
        queued: 10.0 + wobble,
        running: 20.0,
        arrivals: 300 + t % 11,
        completions: 300,
        latency_p50: Some(Duration::from_millis(40 + t % 9)),
        latency_p90: Some(Duration::from_millis(70 + t % 9)),
        latency_p99: Some(Duration::from_millis(90 + t % 13)),
        queue_wait: Some(Duration::from_millis(15)),
        batches,
        batch_items: items,
        batch_busy: Duration::from_millis(20) * batches as u32
            + Duration::from_millis(5) * items as u32,
        replicas_reporting: None,
    }
}

fn policies() -> Vec<(&'static str, Box<dyn Policy>)> {
    let cost = BatchCost::new(Duration::from_millis(20), Duration::from_millis(5));
    let latency_slo = || LatencySlo::new(LatencySloConfig::default()).expect("valid");
    let queue_model = || {
        QueueModel::new(
            QueueModelConfig::default()
                .cost(Some(cost))
                .max_batch_size(8),
        )
        .expect("valid")
    };
    vec![
        (
            "adaptive",
            Box::new(Adaptive::for_slo(Duration::from_millis(250)).expect("valid")),
        ),
        (
            "target_ongoing",
            Box::new(TargetOngoing::new(TargetOngoingConfig::default()).expect("valid")),
        ),
        (
            "hpa",
            Box::new(Hpa::new(HpaConfig::default()).expect("valid")),
        ),
        (
            "kpa",
            Box::new(Kpa::new(KpaConfig::default()).expect("valid")),
        ),
        ("latency_slo", Box::new(latency_slo())),
        ("queue_model", Box::new(queue_model())),
        (
            "max_latency_slo_queue_model",
            Box::new(
                Max::new(vec![Box::new(latency_slo()), Box::new(queue_model())]).expect("valid"),
            ),
        ),
    ]
}

/// One `Policy::decide` on a window of 120 one-second samples (the longest
/// look-back of the built-ins).
fn decide(c: &mut Criterion) {
    let mut window = Window::new(Duration::from_secs(150));
    for t in 0..=120 {
        window.push(Duration::from_secs(t), sample(t));
    }
    let now = Duration::from_secs(120);
    let mut group = c.benchmark_group("autoscale_decide");
    for (name, mut policy) in policies() {
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let input = PolicyInput::new(now, 8, 8, &window).with_bounds(1, 64);
                black_box(policy.decide(black_box(&input)))
            })
        });
    }
    group.finish();
}

/// One engine step: record a sample, then evaluate (policy plus rails).
fn engine_step(c: &mut Criterion) {
    let mut group = c.benchmark_group("autoscale_engine_step");
    for (name, policy) in policies() {
        let config = EngineConfig::default()
            .max_replicas(64)
            .initial_replicas(Some(8));
        let mut engine = Engine::new(config, policy).expect("valid");
        let mut t = 0u64;
        group.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                t += 1;
                let now = Duration::from_secs(t);
                engine.record(now, sample(t));
                black_box(engine.evaluate(now, ReplicaCounts::ready(8)))
            })
        });
    }
    group.finish();
}

/// Simulated requests per second of wall time.
fn simulator(c: &mut Criterion) {
    let config = SimConfig::default();
    let sim = Simulation::new(config.clone()).expect("default config is valid");
    let capacity = config.replica.capacity_rps(config.slo);
    let mut group = c.benchmark_group("autoscale_sim");
    group.sample_size(10);

    let steady = Trace::constant(5_000.0, Duration::from_secs(600)).expect("valid trace");
    let replicas = (5_000.0 / capacity * 1.3).ceil() as u32;
    let arrivals = sim.run(&steady, &mut FixedReplicas::new(replicas)).arrivals;
    group.throughput(Throughput::Elements(arrivals));
    group.bench_function("steady_5k_rps_fixed", |b| {
        b.iter(|| black_box(sim.run(&steady, &mut FixedReplicas::new(replicas))))
    });

    // The MMPP trace of the comparison at 10x its rate, driven by the real
    // engine and QueueModel (decisions every second).
    let bursty = Trace::mmpp(Mmpp {
        base_rps: 1_500.0,
        burst_factor: 8.0,
        mean_calm: Duration::from_secs(600),
        mean_burst: Duration::from_secs(120),
        duration: Duration::from_secs(1_800),
        seed: 42,
    })
    .expect("valid trace");
    let initial = Oracle::plan(&bursty, &config).replicas_at(Duration::ZERO);
    let queue_model = || {
        builtin_contenders(&config, initial)
            .expect("valid")
            .into_iter()
            .find(|c| convoy_autoscale_sim::Controller::name(c) == "QueueModel")
            .expect("QueueModel is a built-in contender")
    };
    let arrivals = sim.run(&bursty, &mut queue_model()).arrivals;
    group.throughput(Throughput::Elements(arrivals));
    group.bench_function("mmpp_15k_rps_queue_model", |b| {
        b.iter(|| black_box(sim.run(&bursty, &mut queue_model())))
    });
    group.finish();
}

criterion_group!(benches, decide, engine_step, simulator);
criterion_main!(benches);
