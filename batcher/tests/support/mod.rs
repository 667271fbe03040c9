//! Step-by-step drivers shared by the integration tests.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::task::Poll;

use convoy_batcher::{Batch, BatchConfig, BatchLayer, ResponseFuture, Worker};
use tokio_test::task::Spawn;
use tower::{BoxError, Service};

pub type Mock = tower_test::mock::Mock<Vec<u32>, Vec<u32>>;
pub type MockHandle = tower_test::mock::Handle<Vec<u32>, Vec<u32>>;
pub type TestWorker = Spawn<Worker<Mock, u32, u32>>;

/// A batcher over a mock batch service, its worker (not spawned: tests
/// poll it step by step) and the mock's handle.
pub fn batcher(config: BatchConfig) -> (Batch<u32, u32>, TestWorker, MockHandle) {
    batcher_with(BatchLayer::new(config))
}

pub fn batcher_with(layer: BatchLayer<u32, u32>) -> (Batch<u32, u32>, TestWorker, MockHandle) {
    let (mock, handle) = tower_test::mock::pair();
    let (svc, worker) = layer.pair(mock);
    (svc, tokio_test::task::spawn(worker), handle)
}

/// Polls the worker until it stops asking to be polled again; fails (instead
/// of hanging) if it keeps asking.
pub fn drive<F: std::future::Future>(worker: &mut Spawn<F>) -> Poll<F::Output> {
    for _ in 0..100_000 {
        let p = worker.poll();
        if p.is_ready() || !worker.is_woken() {
            return p;
        }
    }
    panic!("the worker keeps waking itself");
}

/// Waits (1 ms steps, real or paused time) until `cond` holds; fails after
/// five seconds instead of hanging.
pub async fn eventually(mut cond: impl FnMut() -> bool, what: &str) {
    for _ in 0..5000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    panic!("gave up waiting for {what}");
}

/// Reserves a queue slot and queues `req`; panics if the batcher is not ready.
pub fn call<S>(svc: &mut S, req: u32) -> Spawn<S::Future>
where
    S: Service<u32, Error = BoxError>,
{
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    match ready.poll() {
        Poll::Ready(Ok(())) => {}
        Poll::Ready(Err(e)) => panic!("batcher failed: {e}"),
        Poll::Pending => panic!("batcher not ready"),
    }
    drop(ready);
    tokio_test::task::spawn(svc.call(req))
}

/// The next batch the mock received, if any (without waiting).
pub fn next_batch(
    handle: &mut MockHandle,
) -> Option<(Vec<u32>, tower_test::mock::SendResponse<Vec<u32>>)> {
    let mut next = tokio_test::task::spawn(handle.next_request());
    match next.poll() {
        Poll::Ready(r) => r,
        Poll::Pending => None,
    }
}

/// The result of a finished caller.
pub fn answer(f: &mut Spawn<ResponseFuture<u32>>) -> Result<u32, BoxError> {
    match f.poll() {
        Poll::Ready(r) => r,
        Poll::Pending => panic!("caller still waiting"),
    }
}

/// Runs `body` on a paused current-thread runtime with a debugging
/// `metrics` recorder installed. Returns what was recorded: each metric's
/// name, its `batcher` label and its value.
pub fn recorded<F: std::future::Future>(
    body: impl FnOnce() -> F,
) -> Vec<(String, String, metrics_util::debugging::DebugValue)> {
    let recorder = metrics_util::debugging::DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap()
            .block_on(body());
    });
    snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, value)| {
            let key = key.key();
            let batcher = key
                .labels()
                .find(|l| l.key() == "batcher")
                .map(|l| l.value().to_owned())
                .unwrap_or_default();
            (key.name().to_owned(), batcher, value)
        })
        .collect()
}

/// Keeps panics with this message (the ones a test scripts) out of the
/// test output; other panics are reported as usual.
pub fn quiet_panics(message: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let scripted = payload.downcast_ref::<String>().map(String::as_str) == Some(message)
                || payload.downcast_ref::<&str>() == Some(&message);
            if !scripted {
                default(info);
            }
        }));
    });
}

/// Echo each item back.
pub fn echo(batch: Vec<u32>, send: tower_test::mock::SendResponse<Vec<u32>>) {
    send.send_response(batch);
}
