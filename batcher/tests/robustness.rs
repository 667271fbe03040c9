//! Regressions: readiness is reserved only for a batch that goes out, a
//! failing `poll_ready` lets running batches finish, and extreme settings
//! or costs do not overflow.

mod support;

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_batcher::{BatchConfig, BatchFailed, BatchLayer};
use parking_lot::Mutex;
use support::*;
use tokio_test::{assert_pending, assert_ready};
use tower::{BoxError, Service};

/// A batch service that reserves a slot in `poll_ready` (as a GPU share
/// layer reserves a compute slot) and uses it in `call`.
#[derive(Clone, Default)]
struct Reserving {
    reserved: Arc<AtomicUsize>,
    batches: Arc<Mutex<Vec<Vec<u32>>>>,
    holds: bool,
}

impl Service<Vec<u32>> for Reserving {
    type Response = Vec<u32>;
    type Error = BoxError;
    type Future = Ready<Result<Vec<u32>, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if !self.holds {
            self.holds = true;
            self.reserved.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<u32>) -> Self::Future {
        assert!(self.holds, "call without poll_ready");
        self.holds = false;
        self.reserved.fetch_sub(1, Ordering::SeqCst);
        self.batches.lock().push(batch.clone());
        ready(Ok(batch))
    }
}

#[tokio::test(start_paused = true)]
async fn cancelled_items_never_reserve_the_batch_service() {
    let inner = Reserving::default();
    let config = BatchConfig::builder().max_batch_size(4).build().unwrap();
    let (mut svc, worker) = BatchLayer::<u32, u32>::new(config).pair(inner.clone());
    let mut worker = tokio_test::task::spawn(worker);

    // The only queued caller goes away before the worker runs.
    drop(call(&mut svc, 1));
    assert_pending!(drive(&mut worker));
    assert_eq!(inner.reserved.load(Ordering::SeqCst), 0, "slot held idle");
    assert!(inner.batches.lock().is_empty());
    assert_eq!(svc.handle().stats().cancelled_total, 1);

    // Cancelled items among live ones: only the live ones go, in one batch.
    let mut a = call(&mut svc, 2);
    drop(call(&mut svc, 3));
    let mut b = call(&mut svc, 4);
    assert_pending!(drive(&mut worker));
    assert_eq!(inner.reserved.load(Ordering::SeqCst), 0);
    assert_eq!(*inner.batches.lock(), vec![vec![2, 4]]);
    assert_eq!(answer(&mut a).unwrap(), 2);
    assert_eq!(answer(&mut b).unwrap(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_item_does_not_make_a_batch_look_full() {
    // With a wait for full batches, a cancelled item must not count
    // towards "full".
    let inner = Reserving::default();
    let config = BatchConfig::builder()
        .max_batch_size(2)
        .max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let (mut svc, worker) = BatchLayer::<u32, u32>::new(config).pair(inner.clone());
    let mut worker = tokio_test::task::spawn(worker);
    let mut a = call(&mut svc, 1);
    drop(call(&mut svc, 2));
    assert_pending!(drive(&mut worker));
    assert!(
        inner.batches.lock().is_empty(),
        "dispatched a half batch early"
    );
    assert_eq!(inner.reserved.load(Ordering::SeqCst), 0);
    let mut b = call(&mut svc, 3);
    assert_pending!(drive(&mut worker));
    assert_eq!(*inner.batches.lock(), vec![vec![1, 3]]);
    assert_eq!(answer(&mut a).unwrap(), 1);
    assert_eq!(answer(&mut b).unwrap(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_readiness_error_lets_running_batches_finish() {
    let config = BatchConfig::builder()
        .max_concurrent_batches(2)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(1);
    let mut running = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![1]);

    // The service fails for good while batch [1] runs and 2 is queued.
    let mut queued = call(&mut svc, 2);
    handle.send_error("device lost");
    assert_pending!(drive(&mut worker));
    let err = answer(&mut queued).unwrap_err();
    let failed = err.downcast_ref::<BatchFailed>().expect("BatchFailed");
    let cause = std::error::Error::source(failed).map(|e| e.to_string());
    assert_eq!(cause.as_deref(), Some("device lost"));
    assert!(svc.handle().is_closed());

    // The running batch is answered, then the worker ends.
    send.send_response(batch);
    assert_ready!(drive(&mut worker));
    assert_eq!(answer(&mut running).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn huge_costs_saturate_instead_of_overflowing() {
    let layer = BatchLayer::<u32, u32>::new(BatchConfig::builder().build().unwrap())
        .cost_fn(|_: &u32| u64::MAX);
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    handle.allow(0);
    let mut calls: Vec<_> = (1..=3).map(|i| call(&mut svc, i)).collect();
    // One caller goes away, so the sweep path subtracts its cost too.
    drop(calls.remove(1));
    assert_pending!(drive(&mut worker));
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    assert_eq!(b, vec![1, 3]);
    echo(b, s);
    assert_pending!(drive(&mut worker));
    for (c, want) in calls.iter_mut().zip([1, 3]) {
        assert_eq!(answer(c).unwrap(), want);
    }

    // With a cost cap, each such item goes alone.
    let layer = BatchLayer::<u32, u32>::new(
        BatchConfig::builder()
            .max_batch_cost(u64::MAX)
            .build()
            .unwrap(),
    )
    .cost_fn(|_: &u32| u64::MAX);
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    handle.allow(0);
    let _calls: Vec<_> = (1..=2).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    handle.allow(2);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    assert_eq!(b, vec![1]);
    echo(b, s);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![2]);
}

#[tokio::test(start_paused = true)]
async fn endless_timeouts_and_waits_do_not_overflow() {
    let config = BatchConfig::builder()
        .queue_timeout(Duration::MAX)
        .max_wait(Duration::MAX)
        .max_batch_size(2)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    assert!(next_batch(&mut handle).is_none(), "waits for a full batch");
    let mut b = call(&mut svc, 2);
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![1, 2]);
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut a).unwrap(), 1);
    assert_eq!(answer(&mut b).unwrap(), 2);

    // The same from a deserialized configuration.
    let config: BatchConfig =
        serde_json::from_str(&format!(r#"{{"queue_timeout_us": {}}}"#, u64::MAX)).unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut c = call(&mut svc, 3);
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut c).unwrap(), 3);
}

/// A queue slot reserved before the batcher closed must not report ready:
/// a balancer would route a request to it that can only fail. It reports
/// `Closed` instead (and gives the slot back), so the balancer drops the
/// replica first.
#[tokio::test]
async fn a_slot_reserved_before_close_reports_closed() {
    let (mut svc, _worker, _mock) = batcher(BatchConfig::builder().build().unwrap());
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(matches!(ready.poll(), Poll::Ready(Ok(()))));
    drop(ready);
    svc.handle().close();
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    match ready.poll() {
        Poll::Ready(Err(e)) => assert!(e.is::<convoy_batcher::Closed>(), "{e}"),
        other => panic!("a closed batcher reported {other:?}"),
    }
}
