//! Failure isolation: a batch the batch service fails as a whole is split
//! and run again in halves, so only the requests that fail alone get the
//! error; the pass bound, panics, per-item errors, callers that leave while
//! their batch is being split, and the counters.

mod support;

use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_batcher::{
    metric_names, Batch, BatchConfig, BatchFailed, BatchLayer, BatchPanicked, Closed,
    DeadlineExceeded,
};
use parking_lot::Mutex;
use support::*;
use tokio::time::Instant;
use tokio_test::task::Spawn;
use tokio_test::{assert_pending, assert_ready};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

const PANIC_MESSAGE: &str = "poisoned batch";
const POISONED: &str = "a poisonous request in the batch";

/// How the model fails a batch that holds a poisonous request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Error,
    /// The response future panics.
    Panic,
    /// `call` itself panics.
    PanicInCall,
}

/// An error the test scripts: a poisoned batch, an odd item.
#[derive(Debug)]
struct Scripted(&'static str);

impl std::fmt::Display for Scripted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for Scripted {}

/// A model that answers `id + 1000` per request and fails every batch that
/// holds a poisonous id; it logs each batch it runs.
#[derive(Clone)]
struct Poisoned {
    poison: Arc<HashSet<u32>>,
    how: How,
    runs: Arc<Mutex<Vec<Vec<u32>>>>,
}

impl Poisoned {
    fn new(poison: impl IntoIterator<Item = u32>, how: How) -> Self {
        Self {
            poison: Arc::new(poison.into_iter().collect()),
            how,
            runs: Arc::default(),
        }
    }

    fn runs(&self) -> Vec<Vec<u32>> {
        self.runs.lock().clone()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

impl Service<Vec<u32>> for Poisoned {
    type Response = Vec<u32>;
    type Error = BoxError;
    type Future = BoxFuture<Result<Vec<u32>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<u32>) -> Self::Future {
        self.runs.lock().push(batch.clone());
        let poisoned = batch.iter().any(|id| self.poison.contains(id));
        let how = self.how;
        if poisoned && how == How::PanicInCall {
            panic!("{PANIC_MESSAGE}");
        }
        Box::pin(async move {
            match (poisoned, how) {
                (false, _) => Ok(batch.into_iter().map(|id| id + 1000).collect()),
                (true, How::Error) => Err(Scripted(POISONED).into()),
                (true, _) => panic!("{PANIC_MESSAGE}"),
            }
        })
    }
}

type PoisonedWorker = Spawn<convoy_batcher::Worker<Poisoned, u32, u32>>;

/// A batcher with failure isolation in front of `model`, its worker
/// polled by the test.
fn isolating(config: BatchConfig, model: &Poisoned) -> (Batch<u32, u32>, PoisonedWorker) {
    let (svc, worker) = BatchLayer::<u32, u32>::new(config)
        .isolate_failures()
        .pair(model.clone());
    (svc, tokio_test::task::spawn(worker))
}

fn config(max_batch_size: usize) -> BatchConfig {
    BatchConfig::builder()
        .max_batch_size(max_batch_size)
        .build()
        .unwrap()
}

/// Queues requests `0..n` before the worker runs, so they form one batch
/// of up to `max_batch_size`, then runs the worker until it is idle.
fn run_batch(
    svc: &mut Batch<u32, u32>,
    worker: &mut PoisonedWorker,
    n: u32,
) -> Vec<Result<u32, BoxError>> {
    let mut calls: Vec<_> = (0..n).map(|i| call(svc, i)).collect();
    assert_pending!(drive(worker));
    calls.iter_mut().map(answer).collect()
}

#[tokio::test(start_paused = true)]
async fn one_poisonous_request_fails_alone() {
    let model = Poisoned::new([6], How::Error);
    let (mut svc, mut worker) = isolating(config(8), &model);
    let results = run_batch(&mut svc, &mut worker, 8);
    for (id, r) in results.into_iter().enumerate() {
        if id == 6 {
            let err = r.unwrap_err();
            let failed = err.downcast_ref::<BatchFailed>().expect("BatchFailed");
            let source = std::error::Error::source(failed).unwrap();
            assert_eq!(source.to_string(), POISONED);
        } else {
            assert_eq!(r.unwrap(), id as u32 + 1000);
        }
    }
    // Halves, oldest first: each pass runs again what still fails.
    assert_eq!(
        model.runs(),
        vec![
            vec![0, 1, 2, 3, 4, 5, 6, 7],
            vec![0, 1, 2, 3],
            vec![4, 5, 6, 7],
            vec![4, 5],
            vec![6, 7],
            vec![6],
            vec![7],
        ]
    );
    let stats = svc.handle().stats();
    assert_eq!(stats.isolation_passes_total, 3);
    assert_eq!(stats.isolated_failures_total, 1);
    assert_eq!(stats.batches_total, 7);
    assert_eq!(stats.completed_total, 8);
    assert_eq!(stats.in_flight_items, 0);
}

/// Batches the model ran after the first, and the items in them.
fn extra_work(model: &Poisoned) -> (usize, usize) {
    let runs = model.runs();
    (runs.len() - 1, runs[1..].iter().map(Vec::len).sum())
}

#[tokio::test(start_paused = true)]
async fn one_poisonous_request_costs_log2_n_passes() {
    for n in [2u32, 8, 32, 64] {
        let model = Poisoned::new([n / 3], How::Error);
        let (mut svc, mut worker) = isolating(config(n as usize), &model);
        let results = run_batch(&mut svc, &mut worker, n);
        let failed: Vec<u32> = (0..n).filter(|&i| results[i as usize].is_err()).collect();
        assert_eq!(failed, vec![n / 3]);
        let log2 = n.ilog2();
        assert_eq!(svc.handle().stats().isolation_passes_total, u64::from(log2));
        // Two halves per pass; n, n/2, ... 2 items run again.
        let n = n as usize;
        assert_eq!(
            extra_work(&model),
            (2 * log2 as usize, 2 * n - 2),
            "n = {n}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn a_model_that_fails_everything_costs_log2_n_passes_of_the_whole_batch() {
    for (passes, expected) in [(10u32, (5u64, 62, 5 * 32)), (2, (2, 6, 2 * 32))] {
        let model = Poisoned::new(0..32, How::Error);
        let config = BatchConfig::builder()
            .max_batch_size(32)
            .max_isolation_passes(passes)
            .build()
            .unwrap();
        let (mut svc, mut worker) = isolating(config, &model);
        for r in run_batch(&mut svc, &mut worker, 32) {
            assert!(r.unwrap_err().is::<BatchFailed>());
        }
        let stats = svc.handle().stats();
        let (extra_batches, items) = extra_work(&model);
        assert_eq!(
            (stats.isolation_passes_total, extra_batches, items),
            expected
        );
        assert_eq!(
            stats.isolated_failures_total,
            if passes >= 5 { 32 } else { 0 }
        );
    }
}

#[tokio::test(start_paused = true)]
async fn panics_are_isolated_the_same_way() {
    quiet_panics(PANIC_MESSAGE);
    for how in [How::Panic, How::PanicInCall] {
        let model = Poisoned::new([2, 5], how);
        let (mut svc, mut worker) = isolating(config(8), &model);
        let results = run_batch(&mut svc, &mut worker, 8);
        for (id, r) in results.into_iter().enumerate() {
            if id == 2 || id == 5 {
                let err = r.unwrap_err();
                let panicked = err.downcast_ref::<BatchPanicked>().expect("BatchPanicked");
                assert_eq!(panicked.message(), Some(PANIC_MESSAGE), "{how:?}");
            } else {
                assert_eq!(r.unwrap(), id as u32 + 1000, "{how:?}");
            }
        }
        let stats = svc.handle().stats();
        assert_eq!(stats.isolated_failures_total, 2, "{how:?}");
        assert_eq!(stats.isolation_passes_total, 3, "{how:?}");
        // The worker carries on.
        let mut next = call(&mut svc, 9);
        assert_pending!(drive(&mut worker));
        assert_eq!(answer(&mut next).unwrap(), 1009);
    }
}

#[tokio::test(start_paused = true)]
async fn when_the_passes_run_out_what_still_fails_gets_the_batch_error() {
    for (passes, failing) in [(1u32, 4..8), (2, 6..8), (3, 7..8)] {
        let model = Poisoned::new([7], How::Error);
        let config = BatchConfig::builder()
            .max_batch_size(8)
            .max_isolation_passes(passes)
            .build()
            .unwrap();
        let (mut svc, mut worker) = isolating(config, &model);
        let results = run_batch(&mut svc, &mut worker, 8);
        for (id, r) in results.into_iter().enumerate() {
            if failing.contains(&id) {
                assert!(r.unwrap_err().is::<BatchFailed>(), "{passes} passes: {id}");
            } else {
                assert_eq!(r.unwrap(), id as u32 + 1000, "{passes} passes");
            }
        }
        let stats = svc.handle().stats();
        assert_eq!(stats.isolation_passes_total, u64::from(passes));
        assert_eq!(
            stats.isolated_failures_total,
            u64::from(failing.len() == 1),
            "{passes} passes"
        );
        assert_eq!(stats.batches_total, 1 + 2 * u64::from(passes));
    }
}

#[tokio::test(start_paused = true)]
async fn with_isolation_off_a_failed_batch_fails_every_caller() {
    let off = BatchConfig::builder()
        .max_batch_size(4)
        .failure_isolation(false)
        .build()
        .unwrap();
    // Off in the configuration, or no way to copy requests: as before.
    let model = Poisoned::new([1], How::Error);
    let (mut a, mut worker_a) = isolating(off, &model);
    let (mut b, worker_b) = BatchLayer::<u32, u32>::new(config(4)).pair(model.clone());
    let mut worker_b = tokio_test::task::spawn(worker_b);
    for (svc, worker) in [(&mut a, &mut worker_a), (&mut b, &mut worker_b)] {
        for r in run_batch(svc, worker, 4) {
            assert!(r.unwrap_err().is::<BatchFailed>());
        }
        let stats = svc.handle().stats();
        assert_eq!(stats.batches_total, 1);
        assert_eq!(stats.isolation_passes_total, 0);
    }
    assert_eq!(model.runs(), vec![vec![0, 1, 2, 3], vec![0, 1, 2, 3]]);
}

#[tokio::test(start_paused = true)]
async fn per_item_errors_are_answered_as_they_are_and_never_retried() {
    let runs = Arc::new(Mutex::new(0usize));
    let counted = runs.clone();
    let model = service_fn(move |xs: Vec<u32>| {
        *counted.lock() += 1;
        std::future::ready(Ok::<_, Infallible>(
            xs.into_iter()
                .map(|x| {
                    if x % 2 == 1 {
                        Err(Scripted("odd"))
                    } else {
                        Ok(x)
                    }
                })
                .collect::<Vec<_>>(),
        ))
    });
    let (mut svc, worker) = BatchLayer::<u32, u32>::new(config(8))
        .isolate_failures()
        .pair(model);
    let mut worker = tokio_test::task::spawn(worker);
    let mut calls: Vec<_> = (0..8).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    for (i, c) in calls.iter_mut().enumerate() {
        match answer(c) {
            Ok(x) => assert_eq!(x, i as u32),
            Err(e) => {
                assert_eq!(i % 2, 1);
                assert_eq!(e.downcast_ref::<Scripted>().unwrap().0, "odd");
            }
        }
    }
    assert_eq!(*runs.lock(), 1);
    let stats = svc.handle().stats();
    assert_eq!(stats.isolation_passes_total, 0);
    assert_eq!(stats.isolated_failures_total, 0);
}

/// A batcher over the step-by-step mock with failure isolation.
fn mock_isolating(config: BatchConfig) -> (Batch<u32, u32>, TestWorker, MockHandle) {
    batcher_with(BatchLayer::new(config).isolate_failures())
}

#[tokio::test(start_paused = true)]
async fn parts_of_a_failed_batch_go_before_newer_requests() {
    let (mut svc, mut worker, mut handle) = mock_isolating(config(4));
    let mut calls: Vec<_> = (0..4).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![0, 1, 2, 3]);
    let mut newer = call(&mut svc, 9);
    send.send_error(Scripted("failed"));
    assert_pending!(drive(&mut worker));
    for expected in [vec![0, 1], vec![2, 3], vec![9]] {
        let (batch, send) = next_batch(&mut handle).expect("a batch");
        assert_eq!(batch, expected);
        echo(batch, send);
        assert_pending!(drive(&mut worker));
    }
    for (i, c) in calls.iter_mut().enumerate() {
        assert_eq!(answer(c).unwrap(), i as u32);
    }
    assert_eq!(answer(&mut newer).unwrap(), 9);
    // The halves both succeeded: nothing was isolated, one pass was run.
    let stats = svc.handle().stats();
    assert_eq!(stats.isolation_passes_total, 1);
    assert_eq!(stats.isolated_failures_total, 0);
}

#[tokio::test(start_paused = true)]
async fn callers_that_leave_while_their_batch_is_split_are_not_run_again() {
    let start = Instant::now();
    let layer = BatchLayer::<u32, u32>::new(config(4))
        .isolate_failures()
        .deadline_fn(move |&id| (id == 2).then(|| start + Duration::from_millis(10)));
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    let mut calls: Vec<_> = (0..4).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    let (_, send) = next_batch(&mut handle).unwrap();
    send.send_error(Scripted("failed"));
    assert_pending!(drive(&mut worker));
    // [0, 1] runs; [2, 3] waits for the batch service.
    let (first, send_first) = next_batch(&mut handle).unwrap();
    assert_eq!(first, vec![0, 1]);
    drop(calls.pop()); // caller 3 goes away
    tokio::time::advance(Duration::from_millis(10)).await;
    assert_pending!(drive(&mut worker));
    // Caller 2 is told at its deadline, not when a slot frees.
    let err = answer(&mut calls[2]).unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    echo(first, send_first);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut calls[0]).unwrap(), 0);
    assert_eq!(answer(&mut calls[1]).unwrap(), 1);
    assert!(next_batch(&mut handle).is_none(), "nobody waits for [2, 3]");
    let stats = svc.handle().stats();
    assert_eq!(stats.cancelled_total, 1);
    assert_eq!(stats.rejected.deadline_exceeded, 1);
    assert_eq!(stats.in_flight_items, 0);
    assert_eq!(stats.completed_total, 2);
}

#[tokio::test(start_paused = true)]
async fn a_batch_service_that_fails_for_good_answers_the_waiting_parts() {
    let (mut svc, mut worker, mut handle) = mock_isolating(config(4));
    let mut calls: Vec<_> = (0..4).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    let (_, send) = next_batch(&mut handle).unwrap();
    handle.allow(0);
    send.send_error(Scripted("failed"));
    assert_pending!(drive(&mut worker));
    handle.send_error(Scripted("failed"));
    assert_ready!(drive(&mut worker));
    for c in &mut calls {
        assert!(answer(c).unwrap_err().is::<BatchFailed>());
    }
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(assert_ready!(ready.poll()).unwrap_err().is::<Closed>());
}

#[test]
fn the_counters_are_recorded_under_their_documented_names() {
    use metrics_util::debugging::DebugValue;
    let model = Poisoned::new([3], How::Error);
    let recorded = recorded(|| async {
        let config = BatchConfig::builder()
            .name("iso")
            .max_batch_size(4)
            .build()
            .unwrap();
        let svc = BatchLayer::<u32, u32>::new(config)
            .isolate_failures()
            .layer(model.clone());
        let results = futures::future::join_all((0..4).map(|i| svc.clone().oneshot(i))).await;
        let failed: Vec<usize> = results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| r.is_err().then_some(i))
            .collect();
        assert_eq!(failed, vec![3]);
    });
    let counter = |name: &str| {
        recorded
            .iter()
            .find(|(n, batcher, _)| n == name && batcher == "iso")
            .map(|(.., v)| match v {
                DebugValue::Counter(n) => *n,
                other => panic!("{name} is not a counter: {other:?}"),
            })
            .unwrap_or_else(|| panic!("{name} missing"))
    };
    // The four calls were queued before the worker ran: one batch, split
    // twice until request 3 ran alone.
    assert_eq!(model.runs()[0], vec![0, 1, 2, 3]);
    assert_eq!(counter(metric_names::ISOLATED_FAILURES_TOTAL), 1);
    assert_eq!(counter(metric_names::ISOLATION_PASSES_TOTAL), 2);
}
