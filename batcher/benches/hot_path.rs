//! Tuning bench for the batcher's hot path (the official side-by-side
//! comparison with peers lives in `benches/benches/batcher.rs`).
//!
//! Run with `cargo bench -p convoy-batcher --bench hot_path`.

// criterion_group! generates undocumented items.
#![allow(missing_docs)]

use std::convert::Infallible;
use std::future::ready;
use std::hint::black_box;
use std::mem;
use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::{Batch, BatchConfig, BatchConfigBuilder, BatchLayer, Priority};
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

async fn closed_loop<S>(svc: S, callers: usize, iters: u64) -> Duration
where
    S: Service<u64, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
{
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    let per = iters / callers as u64 + 1;
    for _ in 0..callers {
        let mut svc = svc.clone();
        tasks.spawn(async move {
            for i in 0..per {
                let svc = svc.ready().await.expect("ready");
                black_box(svc.call(i).await.expect("answer"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("caller");
    }
    start.elapsed()
}

type Waiter = (u64, oneshot::Sender<u64>);

#[derive(Clone)]
struct Floor {
    queue: Arc<(Mutex<Vec<Waiter>>, Notify)>,
}

impl Floor {
    fn spawn() -> Self {
        let queue: Arc<(Mutex<Vec<Waiter>>, Notify)> = Arc::default();
        let worker = Arc::clone(&queue);
        tokio::spawn(async move {
            let mut batch = Vec::new();
            loop {
                worker.1.notified().await;
                mem::swap(&mut batch, &mut *worker.0.lock());
                for (item, reply) in batch.drain(..) {
                    let _ = reply.send(item);
                }
            }
        });
        Self { queue }
    }
}

/// A batcher of up to 1024 items in front of an identity batch service,
/// with the settings of `config` and the request functions `layer` adds.
fn identity(
    rt: &Runtime,
    config: BatchConfigBuilder,
    layer: impl FnOnce(BatchLayer<u64, u64>) -> BatchLayer<u64, u64>,
) -> Batch<u64, u64> {
    let config = config
        .max_batch_size(1024)
        .queue_capacity(4096)
        .build()
        .unwrap();
    rt.block_on(async {
        layer(BatchLayer::new(config)).layer(service_fn(|items: Vec<u64>| {
            ready(Ok::<_, Infallible>(items))
        }))
    })
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for callers in [1usize, 64, 1024] {
        let rt = runtime();
        let svc = identity(&rt, BatchConfig::builder(), |layer| layer);
        group.bench_with_input(BenchmarkId::new("convoy", callers), &callers, |b, &n| {
            b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), n, iters)))
        });
        let stats = svc.handle().stats();
        eprintln!(
            "convoy/{callers}: {} batches, mean batch {:.1}, p99 queue wait {:.1} µs",
            stats.batches_total,
            stats.batch_size.mean,
            stats.queue_wait_seconds.p99 * 1e6
        );
        drop(svc);

        // Failure isolation armed (a clone of every request kept while its
        // batch runs), nothing failing: the price of being ready.
        let svc = identity(&rt, BatchConfig::builder(), BatchLayer::isolate_failures);
        group.bench_with_input(
            BenchmarkId::new("convoy_isolating", callers),
            &callers,
            |b, &n| b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), n, iters))),
        );
        drop(svc);

        let config = BatchConfig::builder().queue_timeout(Duration::from_secs(10));
        let svc = identity(&rt, config, |layer| {
            layer
                .priority_fn(|x: &u64| {
                    if x % 2 == 0 {
                        Priority::High
                    } else {
                        Priority::Normal
                    }
                })
                .deadline_fn(|_: &u64| Some(Instant::now() + Duration::from_secs(10)))
        });
        group.bench_with_input(
            BenchmarkId::new("convoy_full", callers),
            &callers,
            |b, &n| b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), n, iters))),
        );
        drop(svc);

        let floor = rt.block_on(async { Floor::spawn() });
        let svc = service_fn(move |x: u64| {
            let (tx, rx) = oneshot::channel();
            floor.queue.0.lock().push((x, tx));
            floor.queue.1.notify_one();
            async move { Ok::<_, Infallible>(rx.await.expect("floor")) }
        });
        group.bench_with_input(BenchmarkId::new("floor", callers), &callers, |b, &n| {
            b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), n, iters)))
        });
    }
    group.finish();
}

/// A simulated model costing 2 ms + 50 µs per item, on a blocking thread.
static SPANS: Mutex<Vec<(Instant, Instant, Instant)>> = Mutex::new(Vec::new());

async fn model(items: Vec<u64>) -> Result<Vec<u64>, tokio::task::JoinError> {
    let called = Instant::now();
    let r = tokio::task::spawn_blocking(move || {
        let began = Instant::now();
        let cost = Duration::from_micros(2_000 + 50 * items.len() as u64);
        let until = Instant::now() + cost;
        std::thread::sleep(cost - Duration::from_micros(200));
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        (items, began)
    })
    .await;
    let (items, began) = r?;
    SPANS.lock().push((called, began, Instant::now()));
    Ok(items)
}

/// Throughput in front of the simulated model, against the model alone;
/// prints the batch statistics.
fn model_bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("hot_path_model");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3));
    let rt = runtime();
    group.throughput(Throughput::Elements(32));
    group.bench_function("direct_batch32", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(model(vec![0; 32]).await.unwrap());
                }
                start.elapsed()
            })
        })
    });
    group.throughput(Throughput::Elements(1));
    SPANS.lock().clear();
    let svc = rt.block_on(async {
        let config = BatchConfig::builder()
            .max_batch_size(32)
            .queue_capacity(4096)
            .build()
            .unwrap();
        BatchLayer::<u64, u64>::new(config).layer(service_fn(model))
    });
    group.bench_function("convoy_256", |b| {
        b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), 256, iters)))
    });
    {
        let spans = SPANS.lock();
        let n = spans.len().saturating_sub(1).max(1) as f64;
        let gap: f64 = spans
            .windows(2)
            .map(|w| w[1].0.duration_since(w[0].2).as_secs_f64())
            .sum::<f64>()
            / n;
        let start_lag: f64 = spans
            .iter()
            .map(|s| s.1.duration_since(s.0).as_secs_f64())
            .sum::<f64>()
            / n;
        eprintln!(
            "model: {} batches, mean gap end->next call {:.1} us, call->thread start {:.1} us",
            spans.len(),
            gap * 1e6,
            start_lag * 1e6
        );
    }
    let stats = svc.handle().stats();
    eprintln!(
        "model/256: {} batches, mean batch {:.1}, service ewma {:?}",
        stats.batches_total,
        stats.batch_size.mean,
        stats.service_time.last()
    );
    group.finish();
}

criterion_group!(benches, bench, model_bench);
criterion_main!(benches);
