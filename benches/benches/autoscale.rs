//! convoy-autoscale benchmarks: decision time per built-in policy and
//! simulator speed.
//!
//! Run with `cargo bench -p convoy-benches --bench autoscale`.
// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::hint::black_box;
use std::time::Duration;

use convoy_autoscale::sim::{FixedReplicas, Mmpp, SimConfig, Simulation, Trace};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};

/// Simulated requests per second of wall time: 10 minutes of traffic.
fn simulator(c: &mut Criterion) {
    let sim = Simulation::new(SimConfig::default()).expect("default config is valid");
    let capacity = sim.config().replica.capacity_rps(sim.config().slo);
    let mut group = c.benchmark_group("autoscale_sim");
    group.sample_size(10);

    let steady = Trace::constant(5_000.0, Duration::from_secs(600)).expect("valid trace");
    let replicas = (5_000.0 / capacity * 1.3).ceil() as u32;
    let arrivals = sim.run(&steady, &mut FixedReplicas::new(replicas)).arrivals;
    group.throughput(Throughput::Elements(arrivals));
    group.bench_function("steady_5k_rps_fixed", |b| {
        b.iter(|| black_box(sim.run(&steady, &mut FixedReplicas::new(replicas))))
    });

    let bursty = Trace::mmpp(Mmpp {
        base_rps: 1_000.0,
        burst_factor: 8.0,
        mean_calm: Duration::from_secs(120),
        mean_burst: Duration::from_secs(30),
        duration: Duration::from_secs(600),
        seed: 1,
    })
    .expect("valid trace");
    let replicas = (8_000.0 / capacity * 1.1).ceil() as u32;
    let arrivals = sim.run(&bursty, &mut FixedReplicas::new(replicas)).arrivals;
    group.throughput(Throughput::Elements(arrivals));
    group.bench_function("mmpp_fixed", |b| {
        b.iter(|| black_box(sim.run(&bursty, &mut FixedReplicas::new(replicas))))
    });
    group.finish();
}

criterion_group!(benches, simulator);
criterion_main!(benches);
