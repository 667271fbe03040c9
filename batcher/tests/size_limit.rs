//! The learned size limit, end to end through a batcher on paused time: a
//! batch service that fails batches past a memory budget (wrapped in a
//! batch error, as a model runtime would), failure isolation splitting
//! them, and the limit that keeps later bursts below the size that failed
//! and probes upward after a period of success.

use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::{metric_names, Batch, BatchConfig, BatchLayer, SizeLimitConfig};
use futures::future::join_all;
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use parking_lot::Mutex;
use tower::{BoxError, Layer, ServiceExt};

const PERIOD: Duration = Duration::from_secs(30);

/// The budget's refusal.
#[derive(Debug)]
struct OverBudget;

impl std::fmt::Display for OverBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("over the memory budget")
    }
}

impl std::error::Error for OverBudget {}

/// What the runtime wraps it in.
#[derive(Debug)]
struct ForwardFailed(OverBudget);

impl std::fmt::Display for ForwardFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("forward pass failed")
    }
}

impl std::error::Error for ForwardFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
    }
}

/// A model whose budget holds `fit` items at once: each batch takes 10 ms
/// per item; the sizes it was called with, and whether each fitted.
#[derive(Clone)]
struct Budget {
    fit: Arc<Mutex<usize>>,
    runs: Arc<Mutex<Vec<(usize, bool)>>>,
}

impl Budget {
    fn new(fit: usize) -> Self {
        Self {
            fit: Arc::new(Mutex::new(fit)),
            runs: Arc::default(),
        }
    }

    fn set_fit(&self, fit: usize) {
        *self.fit.lock() = fit;
    }

    /// The runs since the last call.
    fn take(&self) -> Vec<(usize, bool)> {
        std::mem::take(&mut *self.runs.lock())
    }

    fn batcher(&self, limit: bool) -> Batch<u32, u32> {
        let config = BatchConfig::builder()
            .max_batch_size(32)
            .max_wait(Duration::from_millis(5))
            .build()
            .unwrap();
        let mut layer = BatchLayer::<u32, u32>::new(config).isolate_failures();
        if limit {
            layer = layer.size_limit(
                SizeLimitConfig {
                    probe_after: PERIOD,
                },
                |e| e.is::<OverBudget>(),
            );
        }
        let model = self.clone();
        layer.layer(tower::service_fn(move |xs: Vec<u32>| {
            let model = model.clone();
            async move {
                let n = xs.len();
                let fits = n <= *model.fit.lock();
                model.runs.lock().push((n, fits));
                tokio::time::sleep(Duration::from_millis(10) * n as u32).await;
                if fits {
                    Ok(xs)
                } else {
                    Err(BoxError::from(ForwardFailed(OverBudget)))
                }
            }
        }))
    }
}

/// `n` concurrent requests; every one must be answered.
async fn burst(svc: &Batch<u32, u32>, n: u32) {
    let answers = join_all((0..n).map(|i| svc.clone().oneshot(i))).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), i as u32);
    }
}

fn too_large(runs: &[(usize, bool)]) -> usize {
    runs.iter().filter(|r| !r.1).count()
}

#[tokio::test(start_paused = true)]
async fn later_bursts_stay_under_the_size_that_failed_and_probe_upward_after_a_period() {
    let model = Budget::new(12);
    let svc = model.batcher(true);
    let handle = svc.handle();
    // The first burst: 32 fails, its halves of 16 fail, the quarters fit.
    burst(&svc, 32).await;
    let first = model.take();
    assert_eq!(first[0], (32, false), "{first:?}");
    assert_eq!(too_large(&first), 3, "{first:?}");
    assert!(first.iter().filter(|r| r.1).all(|r| r.0 == 8), "{first:?}");
    let stats = handle.stats();
    assert_eq!(stats.size_limit, Some(8));
    assert_eq!(stats.too_large_batches_total, 3);
    assert_eq!(handle.batch_size_cap(), 8);
    // The next bursts, within the period: batches of 8, nothing fails.
    for _ in 0..3 {
        burst(&svc, 32).await;
        let runs = model.take();
        assert_eq!(runs, vec![(8, true); 4]);
    }
    // After the period: halfway to what failed (16), which fits; then on.
    tokio::time::sleep(PERIOD).await;
    burst(&svc, 32).await;
    let runs = model.take();
    assert_eq!(runs[0], (12, true), "{runs:?}");
    assert_eq!(too_large(&runs), 0, "{runs:?}");
    assert_eq!(handle.stats().size_limit, Some(12));
    tokio::time::sleep(PERIOD).await;
    burst(&svc, 32).await;
    let runs = model.take();
    // 14 does not fit: back to 12, which does.
    assert_eq!(runs[0], (14, false), "{runs:?}");
    assert_eq!(handle.stats().size_limit, Some(12));
    burst(&svc, 32).await;
    assert_eq!(too_large(&model.take()), 0);

    // The budget grows (a neighbour left): the limit climbs back to the
    // max, one step a period.
    model.set_fit(64);
    for _ in 0..12 {
        tokio::time::sleep(PERIOD).await;
        burst(&svc, 32).await;
    }
    assert_eq!(handle.stats().size_limit, Some(32));
    assert_eq!(too_large(&model.take()), 0);
}

#[tokio::test(start_paused = true)]
async fn without_a_size_limit_every_burst_is_tried_whole() {
    let model = Budget::new(12);
    let svc = model.batcher(false);
    for _ in 0..3 {
        burst(&svc, 32).await;
        let runs = model.take();
        assert_eq!(runs[0], (32, false), "{runs:?}");
        assert_eq!(too_large(&runs), 3, "{runs:?}");
    }
    let stats = svc.handle().stats();
    assert_eq!(stats.size_limit, None);
    assert_eq!(stats.too_large_batches_total, 0);
}

/// Errors that do not mean "too large" (a bad input) teach nothing.
#[tokio::test(start_paused = true)]
async fn other_errors_leave_the_limit_alone() {
    let config = BatchConfig::builder()
        .max_batch_size(16)
        .max_wait(Duration::from_millis(5))
        .build()
        .unwrap();
    let svc = BatchLayer::<u32, u32>::new(config)
        .isolate_failures()
        .size_limit(SizeLimitConfig::default(), |e| e.is::<OverBudget>())
        .layer(tower::service_fn(|xs: Vec<u32>| async move {
            if xs.contains(&3) {
                Err(BoxError::from("bad input"))
            } else {
                Ok(xs)
            }
        }));
    let answers = join_all((0..16).map(|i| svc.clone().oneshot(i))).await;
    assert_eq!(answers.iter().filter(|a| a.is_err()).count(), 1);
    let stats = svc.handle().stats();
    assert_eq!(stats.size_limit, Some(16));
    assert_eq!(stats.too_large_batches_total, 0);
}

/// The limit and the too-large batches are published as metrics.
#[tokio::test(start_paused = true)]
async fn the_limit_is_a_gauge_and_failures_a_counter() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    // The worker runs on this (current-thread) runtime's only thread.
    let _local = metrics::set_default_local_recorder(&recorder);
    let model = Budget::new(12);
    let svc = model.batcher(true);
    burst(&svc, 32).await;
    // The handles are registered again within a second.
    tokio::time::sleep(Duration::from_secs(2)).await;
    burst(&svc, 8).await;
    let values: Vec<(String, f64)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter_map(|(k, _, _, v)| {
            let v = match v {
                DebugValue::Gauge(g) => g.into_inner(),
                DebugValue::Counter(c) => c as f64,
                DebugValue::Histogram(_) => return None,
            };
            Some((k.key().name().to_owned(), v))
        })
        .collect();
    let get = |name: &str| values.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
    assert_eq!(get(metric_names::SIZE_LIMIT), Some(8.0), "{values:?}");
    assert_eq!(
        get(metric_names::TOO_LARGE_BATCHES_TOTAL),
        Some(3.0),
        "{values:?}"
    );
}
