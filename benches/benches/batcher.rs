//! convoy-batcher side by side with its peers.
//!
//! Run with `cargo bench -p convoy-benches --bench batcher` (about 6 minutes).
//!
//! Group `batcher_noop`: a no-op batch service on a 2-thread tokio runtime,
//! 1 / 64 / 1024 closed-loop callers, items per second for
//! - `convoy`: `convoy_batcher::BatchLayer` (defaults: batch-when-busy, no wait),
//! - `convoy_isolating`: the same with failure isolation armed
//!   (`BatchLayer::isolate_failures`: a clone of every request kept while its
//!   batch runs) and nothing failing: the price of being ready,
//! - `convoy_full`: the same with a per-request deadline, two priority levels
//!   and a Prometheus `metrics` recorder installed,
//! - `tower_batch_control`: Zebra's `tower-batch-control` 1.1,
//! - `batched_fn`: `batched-fn` 0.2,
//! - `tower_buffer`: a plain `tower::buffer::Buffer` hop (no batching),
//! - `floor`: the least a batcher can do: a mutex-guarded `Vec`, a `Notify`
//!   and a oneshot per item (defined below).
//!
//! Every batcher gets the same caps: at most 64 items per batch, room for
//! every caller in the queue (4096), one batch at a time where the batcher
//! runs batches itself (tower-batch-control sizes its queue as
//! `max_items × max_batches`, so it gets 64 × 64).
//!
//! Group `batcher_model`: a simulated model costing 2 ms + 50 µs per item per
//! batch (max_batch_size 32), run on a blocking thread; 256 closed-loop
//! callers (items/s, against the model's own best 32 / cost(32)) and 1 caller
//! (latency, against cost(1) + 100 µs). The 1-caller p50/p99 of individual
//! calls are printed to stderr after the group.

use std::convert::Infallible;
use std::future::{ready, Future};
use std::hint::black_box;
use std::mem;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use batched_fn::batched_fn;
use convoy_batcher::{BatchConfig, BatchLayer, Priority};
use criterion::{BenchmarkId, Criterion, Throughput};
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tower::{service_fn, Layer, Service, ServiceExt};

/// Callers in the no-op group.
const CALLERS: [usize; 3] = [1, 64, 1024];
/// Largest batch every batcher may form in the no-op group (a typical model
/// batch; with a cap above the caller count, batched-fn would wait out its
/// 1 ms `max_delay` on every batch).
const NOOP_BATCH: usize = 64;
/// Queue room: every caller fits.
const QUEUE: usize = 4096;

fn runtime() -> Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// `total` calls split as evenly as possible over `callers`.
fn shares(total: u64, callers: usize) -> impl Iterator<Item = u64> {
    let callers = callers as u64;
    (0..callers).map(move |i| total / callers + u64::from(i < total % callers))
}

/// `callers` closed-loop tasks make `iters` calls in all; returns the time
/// from the first spawn to the last answer.
async fn closed_loop<S, R>(svc: S, callers: usize, iters: u64, request: fn(u64) -> R) -> Duration
where
    S: Service<R, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    R: Send + 'static,
{
    let start = Instant::now();
    let mut tasks = JoinSet::new();
    for n in shares(iters, callers) {
        let mut svc = svc.clone();
        tasks.spawn(async move {
            for i in 0..n {
                let svc = svc.ready().await.expect("ready");
                black_box(svc.call(request(i)).await.expect("answer"));
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("caller task");
    }
    start.elapsed()
}

// ---------------------------------------------------------------------------
// The floor: a bare mutex + notify + oneshot batcher.

type Waiter = (u64, oneshot::Sender<u64>);

/// The least a batcher does: callers push `(item, reply)` under a lock and
/// notify; one worker swaps the whole queue out and answers each item, in
/// batches of at most `NOOP_BATCH`.
#[derive(Clone)]
struct Floor {
    queue: Arc<(Mutex<Vec<Waiter>>, Notify)>,
}

impl Floor {
    fn spawn() -> Self {
        let queue: Arc<(Mutex<Vec<Waiter>>, Notify)> = Arc::default();
        let worker = Arc::clone(&queue);
        tokio::spawn(async move {
            let mut batch = Vec::with_capacity(NOOP_BATCH);
            loop {
                worker.1.notified().await;
                mem::swap(&mut batch, &mut *worker.0.lock());
                // The no-op batch service: each item answers itself.
                while !batch.is_empty() {
                    let size = batch.len().min(NOOP_BATCH);
                    for (item, reply) in batch.drain(..size) {
                        let _ = reply.send(item);
                    }
                }
            }
        });
        Self { queue }
    }

    fn call(&self, item: u64) -> impl Future<Output = u64> + Send + 'static {
        let (tx, rx) = oneshot::channel();
        self.queue.0.lock().push((item, tx));
        self.queue.1.notify_one();
        async move { rx.await.expect("the floor worker never drops a reply") }
    }
}

// ---------------------------------------------------------------------------
// Peers.

/// `tower-batch-control` wants `RequestWeight` on its items.
struct Item(u64);

impl tower_batch_control::RequestWeight for Item {}

// batched-fn's macro expands to code that times its max_delay with std's Instant.
#[allow(clippy::disallowed_types)]
async fn batched_fn_call(item: u64) -> u64 {
    let eval = batched_fn! {
        handler = |batch: Vec<u64>| -> Vec<u64> { batch };
        config = {
            max_batch_size: NOOP_BATCH,
            max_delay: 1,
            channel_cap: Some(QUEUE),
        };
        context = {};
    };
    eval(item).await.expect("batched-fn answer")
}

type Group<'a> = criterion::BenchmarkGroup<'a, criterion::measurement::WallTime>;

/// One closed-loop measurement of `svc` at `callers` callers.
fn measure<S, R>(
    group: &mut Group<'_>,
    name: &str,
    callers: usize,
    rt: &Runtime,
    svc: &S,
    request: fn(u64) -> R,
) where
    S: Service<R, Response = u64> + Clone + Send + 'static,
    S::Future: Send,
    S::Error: std::fmt::Debug,
    R: Send + 'static,
{
    group.bench_with_input(BenchmarkId::new(name, callers), &callers, |b, &callers| {
        b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), callers, iters, request)));
    });
}

fn id(x: u64) -> u64 {
    x
}

fn noop(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher_noop");
    group
        .throughput(Throughput::Elements(1))
        .sample_size(10)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(2));

    for callers in CALLERS {
        // convoy, defaults.
        let rt = runtime();
        let svc = rt.block_on(async {
            let config = BatchConfig::builder()
                .max_batch_size(NOOP_BATCH)
                .queue_capacity(QUEUE)
                .build()
                .expect("valid config");
            BatchLayer::<u64, u64>::new(config).layer(service_fn(|items: Vec<u64>| {
                ready(Ok::<_, Infallible>(items))
            }))
        });
        measure(&mut group, "convoy", callers, &rt, &svc, id);
        drop(svc);
        drop(rt);

        // convoy with failure isolation armed, nothing failing.
        let rt = runtime();
        let svc = rt.block_on(async {
            let config = BatchConfig::builder()
                .max_batch_size(NOOP_BATCH)
                .queue_capacity(QUEUE)
                .build()
                .expect("valid config");
            BatchLayer::<u64, u64>::new(config)
                .isolate_failures()
                .layer(service_fn(|items: Vec<u64>| {
                    ready(Ok::<_, Infallible>(items))
                }))
        });
        measure(&mut group, "convoy_isolating", callers, &rt, &svc, id);
        drop(svc);
        drop(rt);

        // tower-batch-control: its items answer at once, Flush is a no-op.
        let rt = runtime();
        let svc = rt.block_on(async {
            let inner = service_fn(|ctl: tower_batch_control::BatchControl<Item>| {
                ready(Ok::<u64, Infallible>(match ctl {
                    tower_batch_control::BatchControl::Item(Item(x)) => x,
                    tower_batch_control::BatchControl::Flush => 0,
                }))
            });
            tower_batch_control::Batch::new(
                inner,
                NOOP_BATCH,
                Some(QUEUE / NOOP_BATCH),
                Duration::from_millis(1),
            )
        });
        measure(&mut group, "tower_batch_control", callers, &rt, &svc, Item);
        drop(svc);
        drop(rt);

        // batched-fn (its worker is a thread of its own, made on first use).
        let rt = runtime();
        let svc = service_fn(|x: u64| async move { Ok::<_, Infallible>(batched_fn_call(x).await) });
        measure(&mut group, "batched_fn", callers, &rt, &svc, id);
        drop(rt);

        // A plain tower::buffer hop.
        let rt = runtime();
        let svc = rt.block_on(async {
            tower::buffer::Buffer::new(service_fn(|x: u64| ready(Ok::<_, Infallible>(x))), QUEUE)
        });
        measure(&mut group, "tower_buffer", callers, &rt, &svc, id);
        drop(svc);
        drop(rt);

        // The floor.
        let rt = runtime();
        let floor = rt.block_on(async { Floor::spawn() });
        let svc = service_fn(move |x: u64| {
            let answer = floor.call(x);
            async move { Ok::<_, Infallible>(answer.await) }
        });
        measure(&mut group, "floor", callers, &rt, &svc, id);
        drop(svc);
        drop(rt);
    }

    // convoy with a deadline on every item, two priority levels and a
    // metrics recorder installed (last: the recorder stays installed).
    install_metrics_recorder();
    for callers in CALLERS {
        let rt = runtime();
        let svc = rt.block_on(async {
            let config = BatchConfig::builder()
                .max_batch_size(NOOP_BATCH)
                .queue_capacity(QUEUE)
                .queue_timeout(Duration::from_secs(10))
                .build()
                .expect("valid config");
            BatchLayer::<u64, u64>::new(config)
                .priority_fn(|x: &u64| {
                    if x.is_multiple_of(2) {
                        Priority::High
                    } else {
                        Priority::Normal
                    }
                })
                .deadline_fn(|_: &u64| Some(Instant::now() + Duration::from_secs(10)))
                .layer(service_fn(|items: Vec<u64>| {
                    ready(Ok::<_, Infallible>(items))
                }))
        });
        measure(&mut group, "convoy_full", callers, &rt, &svc, id);
        drop(svc);
        drop(rt);
    }
    group.finish();
}

fn install_metrics_recorder() {
    static HANDLE: OnceLock<metrics_exporter_prometheus::PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .install_recorder()
            .expect("no other recorder is installed")
    });
}

// ---------------------------------------------------------------------------
// A simulated model: 2 ms + 50 µs per item per batch.

const MODEL_BATCH: usize = 32;

fn model_cost(items: usize) -> Duration {
    Duration::from_micros(2_000 + 50 * items as u64)
}

/// Holds a thread for `cost`: sleep most of it, spin the rest, so the cost
/// is exact to a few µs (a plain sleep overshoots by ~60 µs, a tokio sleep by
/// up to 1 ms).
fn occupy(cost: Duration) {
    let until = Instant::now() + cost;
    if let Some(coarse) = cost.checked_sub(Duration::from_micros(200)) {
        std::thread::sleep(coarse);
    }
    while Instant::now() < until {
        std::hint::spin_loop();
    }
}

async fn simulated_model(items: Vec<u64>) -> Result<Vec<u64>, tokio::task::JoinError> {
    tokio::task::spawn_blocking(move || {
        occupy(model_cost(items.len()));
        items
    })
    .await
}

/// Latencies of single calls, recorded by the 1-caller runs, in ns.
fn latency_histogram() -> &'static Mutex<Histogram<u64>> {
    static HIST: OnceLock<Mutex<Histogram<u64>>> = OnceLock::new();
    HIST.get_or_init(|| {
        Mutex::new(Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("bounds"))
    })
}

fn model(c: &mut Criterion) {
    let mut group = c.benchmark_group("batcher_model");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4));

    // The model's own best: batches of 32 back to back, no batcher.
    let rt = runtime();
    group.throughput(Throughput::Elements(MODEL_BATCH as u64));
    group.bench_function("model_direct/batch32", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let start = Instant::now();
                for _ in 0..iters {
                    black_box(simulated_model(vec![0; MODEL_BATCH]).await.expect("model"));
                }
                start.elapsed()
            })
        })
    });

    // The batcher in front of it, 256 closed-loop callers.
    group.throughput(Throughput::Elements(1));
    let svc = rt.block_on(async {
        let config = BatchConfig::builder()
            .max_batch_size(MODEL_BATCH)
            .queue_capacity(QUEUE)
            .build()
            .expect("valid config");
        BatchLayer::<u64, u64>::new(config).layer(service_fn(simulated_model))
    });
    group.bench_function("convoy/256_callers", |b| {
        b.iter_custom(|iters| rt.block_on(closed_loop(svc.clone(), 256, iters, id)))
    });

    // One caller: latency of a lone request, direct and through the batcher.
    latency_histogram().lock().reset();
    group.bench_function("model_direct/batch1", |b| {
        b.iter_custom(|iters| {
            rt.block_on(async {
                let mut hist = latency_histogram().lock().clone();
                let start = Instant::now();
                for _ in 0..iters {
                    let sent = Instant::now();
                    black_box(simulated_model(vec![0]).await.expect("model"));
                    let _ = hist.record(sent.elapsed().as_nanos() as u64);
                }
                let elapsed = start.elapsed();
                *latency_histogram().lock() = hist;
                elapsed
            })
        })
    });
    let direct_p50 = latency_histogram().lock().value_at_quantile(0.5);
    latency_histogram().lock().reset();
    group.bench_function("convoy/1_caller", |b| {
        b.iter_custom(|iters| {
            let mut svc = svc.clone();
            rt.block_on(async move {
                let mut hist = latency_histogram().lock().clone();
                let start = Instant::now();
                for i in 0..iters {
                    let sent = Instant::now();
                    let svc = svc.ready().await.expect("ready");
                    black_box(svc.call(i).await.expect("answer"));
                    let _ = hist.record(sent.elapsed().as_nanos() as u64);
                }
                let elapsed = start.elapsed();
                *latency_histogram().lock() = hist;
                elapsed
            })
        })
    });
    group.finish();
    let hist = latency_histogram().lock();
    eprintln!(
        "batcher_model convoy/1_caller: {} calls, p50 {:.1} µs, p99 {:.1} µs; \
         model called directly: p50 {:.1} µs (nominal cost(1) = {} µs, target p50 <= {} µs)",
        hist.len(),
        hist.value_at_quantile(0.5) as f64 / 1e3,
        hist.value_at_quantile(0.99) as f64 / 1e3,
        direct_p50 as f64 / 1e3,
        model_cost(1).as_micros(),
        model_cost(1).as_micros() + 100,
    );
}

fn main() {
    let mut c = Criterion::default().configure_from_args();
    noop(&mut c);
    model(&mut c);
    c.final_summary();
}
