//! The monitor's cost on the request path: a tower service called with and
//! without a DriftLayer in front (sample size 1000, a 4-column row per
//! sampled request), 8 concurrent callers on a 2-worker runtime, around a
//! no-op service and around one with a few microseconds of work per
//! request. Report the ratio of off and on in the same run.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use convoy_drift::stats::{ColumnKind, ColumnValues};
use convoy_drift::{
    DriftLayer, DriftSettings, Features, Monitor, Reference, ReferenceColumn, Row, Value,
};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tower::{service_fn, Layer, Service, ServiceExt};

struct Rows;

impl Features<u64, u64> for Rows {
    fn inputs(&self, req: &u64, row: &mut Row) {
        row.push(Value::Num(*req as f64));
        row.push(Value::Num((*req % 7) as f64));
        row.push(Value::Cat(Arc::from(if req & 1 == 0 {
            "even"
        } else {
            "odd"
        })));
    }
    fn outputs(&self, resp: &u64, row: &mut Row) {
        row.push(Value::Num(*resp as f64));
    }
}

fn settings() -> DriftSettings {
    let num = |name: &str| ReferenceColumn {
        name: name.into(),
        kind: ColumnKind::Numerical,
        values: ColumnValues::Numerical((0..1000).map(f64::from).collect()),
    };
    let reference = Reference {
        columns: vec![
            num("x"),
            num("x_mod_7"),
            ReferenceColumn {
                name: "parity".into(),
                kind: ColumnKind::Categorical,
                values: ColumnValues::Categorical(
                    (0..1000)
                        .map(|i| ["even", "odd"][i % 2].to_string())
                        .collect(),
                ),
            },
            num("y"),
        ],
    };
    DriftSettings {
        window: Duration::from_secs(1),
        sample_size: 1000,
        min_samples: 30,
        drift_share: 0.5,
        per_column: vec![(None, None); 4],
        reference,
        webhook: None,
    }
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let inner =
        service_fn(|x: u64| async move { Ok::<_, std::convert::Infallible>(black_box(x) * 2) });
    let handle = rt.block_on(async { Monitor::start("bench", settings()) });
    let layered = DriftLayer::new(handle, Rows).layer(inner);

    const CALLERS: u64 = 8;
    const PER_CALLER: u64 = 1000;
    let mut g = c.benchmark_group("drift_overhead");
    g.throughput(Throughput::Elements(CALLERS * PER_CALLER));
    g.bench_function("off", |b| {
        b.to_async(&rt).iter(|| run(inner, CALLERS, PER_CALLER))
    });
    g.bench_function("on", |b| {
        b.to_async(&rt)
            .iter(|| run(layered.clone(), CALLERS, PER_CALLER))
    });
    g.finish();

    // A service with some work per request (~a few µs of arithmetic), the
    // smallest model a server would run: the monitor's share of the time.
    let busy = service_fn(|x: u64| async move {
        let mut acc = x;
        for i in 0..2_000u64 {
            acc = black_box(acc.wrapping_mul(6364136223846793005).wrapping_add(i));
        }
        Ok::<_, std::convert::Infallible>(acc)
    });
    let handle = rt.block_on(async { Monitor::start("bench-busy", settings()) });
    let busy_layered = DriftLayer::new(handle, Rows).layer(busy);
    let mut g = c.benchmark_group("drift_overhead_busy");
    g.throughput(Throughput::Elements(CALLERS * PER_CALLER));
    g.bench_function("off", |b| {
        b.to_async(&rt).iter(|| run(busy, CALLERS, PER_CALLER))
    });
    g.bench_function("on", |b| {
        b.to_async(&rt)
            .iter(|| run(busy_layered.clone(), CALLERS, PER_CALLER))
    });
    g.finish();
}

async fn run<S>(svc: S, callers: u64, per: u64)
where
    S: Service<u64, Response = u64, Error = std::convert::Infallible> + Clone + Send + 'static,
    S::Future: Send,
{
    let tasks: Vec<_> = (0..callers)
        .map(|c| {
            let mut svc = svc.clone();
            tokio::spawn(async move {
                let mut sum = 0u64;
                for i in 0..per {
                    let r = svc.ready().await.unwrap().call(c * per + i).await.unwrap();
                    sum = sum.wrapping_add(r);
                }
                sum
            })
        })
        .collect();
    for t in tasks {
        black_box(t.await.unwrap());
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
