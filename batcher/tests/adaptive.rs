//! The adaptive batch-size cap against simulated models whose batch cost is
//! a function of the batch size (paused time, closed-loop callers).

mod support;

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::{batch_fn, AdaptiveConfig, Batch, BatchConfig};
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::task::JoinSet;
use tower::ServiceExt;

type Cost = Arc<dyn Fn(usize) -> Duration + Send + Sync>;

fn ms(x: f64) -> Duration {
    Duration::from_secs_f64(x / 1000.0)
}

/// A batcher over a model that sleeps `cost(n)` per batch of `n`, and the
/// sizes of the batches it ran.
fn model(config: BatchConfig, cost: Cost) -> (Batch<u32, u32>, Arc<Mutex<Vec<usize>>>) {
    let sizes = Arc::new(Mutex::new(Vec::new()));
    let log = sizes.clone();
    let svc = batch_fn(config, move |xs: Vec<u32>| {
        log.lock().push(xs.len());
        let took = cost(xs.len());
        async move {
            tokio::time::sleep(took).await;
            Ok::<_, Infallible>(xs)
        }
    });
    (svc, sizes)
}

/// `clients` callers, each calling again as soon as it is answered, until
/// `stop` is set; each checks its answer.
fn closed_loop(svc: &Batch<u32, u32>, clients: u32, stop: &Arc<AtomicBool>) -> JoinSet<u64> {
    let mut set = JoinSet::new();
    for c in 0..clients {
        let svc = svc.clone();
        let stop = stop.clone();
        set.spawn(async move {
            let mut answered = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let x = c * 1_000_000 + (answered % 1_000_000) as u32;
                assert_eq!(svc.clone().oneshot(x).await.unwrap(), x);
                answered += 1;
            }
            answered
        });
    }
    set
}

fn adaptive(max: usize) -> BatchConfig {
    BatchConfig::builder()
        .max_batch_size(max)
        .queue_capacity(4096)
        .adaptive_batch_size(true)
        .build()
        .unwrap()
}

/// Mean and median of the last `n` batch sizes.
fn recent(sizes: &Mutex<Vec<usize>>, n: usize) -> (f64, usize) {
    let sizes = sizes.lock();
    let mut tail = sizes[sizes.len().saturating_sub(n)..].to_vec();
    let mean = tail.iter().sum::<usize>() as f64 / tail.len() as f64;
    tail.sort_unstable();
    (mean, tail[tail.len() / 2])
}

async fn stop_all(stop: &AtomicBool, clients: JoinSet<u64>) {
    stop.store(true, Ordering::Relaxed);
    for answered in clients.join_all().await {
        assert!(answered > 0);
    }
}

#[tokio::test(start_paused = true)]
async fn settles_where_throughput_peaks() {
    // 2 ms + 0.25 ms per item up to 8 items, 3 ms per item beyond: items/s
    // peak at a batch of 8.
    let cost: Cost = Arc::new(|n| {
        let n = n as f64;
        ms(2.0 + 0.25 * n.min(8.0) + 3.0 * (n - 8.0).max(0.0))
    });
    let (svc, sizes) = model(adaptive(32), cost);
    let handle = svc.handle();
    assert_eq!(handle.batch_size_cap(), 32);
    let stop = Arc::new(AtomicBool::new(false));
    let clients = closed_loop(&svc, 64, &stop);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(handle.batch_size_cap(), 8);
    assert_eq!(handle.stats().batch_size_cap, 8);
    // Probes of 4 and 16 take a few batches in every explore period; the
    // mean of the recent batches stays within the best bucket (5..=8).
    let (mean, median) = recent(&sizes, 512);
    assert_eq!(median, 8);
    assert!((5.0..=8.0).contains(&mean), "mean batch {mean}");
    stop_all(&stop, clients).await;
}

#[tokio::test(start_paused = true)]
async fn a_profile_serves_at_the_best_size_from_the_first_batch() {
    // Fastest per item at a batch of 2 (a detector on a small CPU): 80 ms
    // alone, 120 ms for 2, then 70 ms per item more.
    let cost: Cost = Arc::new(|n| {
        let n = n as f64;
        ms(40.0 + 40.0 * n.min(2.0) + 70.0 * (n - 2.0).max(0.0))
    });
    let profile: Vec<_> = [1usize, 2, 4, 8].iter().map(|&n| (n, cost(n))).collect();
    for (with_profile, first) in [(true, 2), (false, 8)] {
        let mut config = BatchConfig::builder()
            .max_batch_size(8)
            .queue_capacity(4096)
            .adaptive_batch_size(true);
        if with_profile {
            config = config.adaptive_profile(profile.clone());
        }
        let (svc, sizes) = model(config.build().unwrap(), cost.clone());
        assert_eq!(svc.handle().batch_size_cap(), first);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = closed_loop(&svc, 32, &stop);
        tokio::time::sleep(Duration::from_secs(6)).await;
        stop_all(&stop, clients).await;
        // The first batches under load: at the profile's best size, or at
        // the max until the cap has measured its way down.
        let early = sizes.lock()[..8].to_vec();
        assert!(
            early.iter().all(|&n| n == first),
            "{with_profile}: {early:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn bigger_is_better_settles_at_the_max() {
    let cost: Cost = Arc::new(|n| ms(5.0 + 0.1 * n as f64));
    let (svc, sizes) = model(adaptive(32), cost);
    let handle = svc.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = closed_loop(&svc, 64, &stop);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(handle.batch_size_cap(), 32);
    let (mean, median) = recent(&sizes, 512);
    assert_eq!(median, 32);
    assert!(mean > 28.0, "mean batch {mean}");
    stop_all(&stop, clients).await;
}

#[tokio::test(start_paused = true)]
async fn follows_a_cost_curve_that_changes() {
    let switched = Arc::new(AtomicBool::new(false));
    let cost: Cost = {
        let switched = switched.clone();
        Arc::new(move |n| {
            let n = n as f64;
            if switched.load(Ordering::Relaxed) {
                // Best at 4: 1 ms + 0.25 ms per item, 4 ms per item beyond 4.
                ms(1.0 + 0.25 * n.min(4.0) + 4.0 * (n - 4.0).max(0.0))
            } else {
                // Best at 32.
                ms(5.0 + 0.1 * n)
            }
        })
    };
    let (svc, sizes) = model(adaptive(32), cost);
    let handle = svc.handle();
    let stop = Arc::new(AtomicBool::new(false));
    let clients = closed_loop(&svc, 64, &stop);
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.batch_size_cap(), 32);
    switched.store(true, Ordering::Relaxed);
    let start = tokio::time::Instant::now();
    let mut at = None;
    for _ in 0..10_000 {
        tokio::time::sleep(Duration::from_millis(1)).await;
        if handle.batch_size_cap() == 4 {
            at = Some(start.elapsed());
            break;
        }
    }
    let at = at.expect("the cap never reached 4");
    assert!(at <= Duration::from_secs(3), "took {at:?}");
    // And it stays there.
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(handle.batch_size_cap(), 4);
    assert_eq!(recent(&sizes, 256).1, 4);
    stop_all(&stop, clients).await;
}

#[tokio::test(start_paused = true)]
async fn tuning_knobs_apply_and_the_cap_is_off_by_default() {
    let fixed = BatchConfig::builder().max_batch_size(16).build().unwrap();
    assert_eq!(fixed.adaptive_batch_size(), None);
    let (svc, _) = model(fixed, Arc::new(|_| ms(1.0)));
    assert_eq!(svc.handle().batch_size_cap(), 16);

    let tuned = AdaptiveConfig {
        min_samples: 4,
        explore_every: 16,
        margin_percent: 10,
    };
    let config = BatchConfig::builder()
        .max_batch_size(16)
        .adaptive(tuned)
        .build()
        .unwrap();
    assert_eq!(config.adaptive_batch_size(), Some(tuned));
    let json = serde_json::to_string(&config).unwrap();
    let back: BatchConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back, config);
    let on: BatchConfig =
        serde_json::from_str(r#"{"max_batch_size": 8, "adaptive_batch_size": true}"#).unwrap();
    assert_eq!(on.adaptive_batch_size(), Some(AdaptiveConfig::default()));
    let bad = BatchConfig::builder()
        .adaptive(AdaptiveConfig {
            min_samples: 0,
            ..AdaptiveConfig::default()
        })
        .build();
    assert!(bad.is_err());
}

#[test]
fn the_cap_is_a_gauge_when_adaptive() {
    use metrics_util::debugging::DebugValue;
    let recorded = support::recorded(|| async {
        // Best at 4: 1 ms + 0.25 ms per item, 4 ms per item beyond 4.
        let cost: Cost = Arc::new(|n| {
            let n = n as f64;
            ms(1.0 + 0.25 * n.min(4.0) + 4.0 * (n - 4.0).max(0.0))
        });
        let config = BatchConfig::builder()
            .name("adaptive")
            .max_batch_size(16)
            .adaptive_batch_size(true)
            .build()
            .unwrap();
        let (svc, _) = model(config, cost.clone());
        let fixed = BatchConfig::builder().name("fixed").build().unwrap();
        let (plain, _) = model(fixed, cost);
        let stop = Arc::new(AtomicBool::new(false));
        let clients = closed_loop(&svc, 32, &stop);
        let others = closed_loop(&plain, 4, &stop);
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(svc.handle().batch_size_cap(), 4);
        stop_all(&stop, clients).await;
        stop_all(&stop, others).await;
    });
    let caps: Vec<(String, f64)> = recorded
        .into_iter()
        .filter(|(name, ..)| name == convoy_batcher::metric_names::BATCH_SIZE_CAP)
        .map(|(_, batcher, value)| {
            let value = match value {
                DebugValue::Gauge(v) => v.into_inner(),
                other => panic!("not a gauge: {other:?}"),
            };
            (batcher, value)
        })
        .collect();
    assert_eq!(caps, vec![("adaptive".to_owned(), 4.0)]);
}

fn run_case(
    max: usize,
    costs: Vec<u16>,
    clients: u32,
    per_client: u32,
) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(async move {
        // Cost per batch: a random value per power-of-two bucket, in 10 µs.
        let cost: Cost = Arc::new(move |n| {
            let bucket = (usize::BITS - (n - 1).leading_zeros()) as usize;
            Duration::from_micros(10 * u64::from(costs[bucket.min(costs.len() - 1)]))
        });
        let config = BatchConfig::builder()
            .max_batch_size(max)
            .queue_capacity(1024)
            .adaptive(AdaptiveConfig {
                min_samples: 2,
                explore_every: 4,
                margin_percent: 5,
            })
            .build()
            .unwrap();
        let (svc, sizes) = model(config, cost);
        let handle = svc.handle();
        let mut set = JoinSet::new();
        for c in 0..clients {
            let svc = svc.clone();
            set.spawn(async move {
                for i in 0..per_client {
                    let x = c * 10_000 + i;
                    let y = svc.clone().oneshot(x).await.unwrap();
                    assert_eq!(y, x);
                }
            });
        }
        let mut caps = Vec::new();
        while !set.is_empty() {
            tokio::select! {
                done = set.join_next() => done.unwrap().unwrap(),
                () = tokio::time::sleep(Duration::from_micros(500)) => {
                    caps.push(handle.batch_size_cap());
                }
            }
        }
        caps.push(handle.batch_size_cap());
        for cap in caps {
            prop_assert!((1..=max).contains(&cap), "cap {cap} outside 1..={max}");
        }
        let sizes = sizes.lock();
        prop_assert!(sizes.iter().all(|&n| (1..=max).contains(&n)));
        // Every request ran exactly once (each caller checked its answer).
        prop_assert_eq!(sizes.iter().sum::<usize>(), (clients * per_client) as usize);
        prop_assert_eq!(
            handle.stats().completed_total,
            u64::from(clients * per_client)
        );
        Ok(())
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_cap_stays_in_range_and_every_request_is_answered_once(
        max in 1usize..48,
        costs in proptest::collection::vec(1u16..2000, 1..8),
        clients in 1u32..64,
        per_client in 1u32..40,
    ) {
        run_case(max, costs, clients, per_client)?;
    }
}
