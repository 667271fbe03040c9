//! convoy-batcher driven by an operation sequence.
//!
//! Requests arrive with keys, priorities, costs and deadlines; callers
//! cancel; time advances; the batch service answers each batch with its
//! results, a batch error, a panic, or a batch of the wrong length; the
//! batch size and queue capacity change live; the batcher is closed or its
//! worker dropped. After every step:
//! - the queue never holds more than its capacity and no batch breaks the
//!   size or cost caps or mixes keys;
//! - nothing expired or cancelled reaches the batch service, nothing is
//!   dispatched twice.
//!
//! At the end every admitted caller has exactly one answer, of the kind
//! its batch's fate calls for, and the statistics add up.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::task::Poll;
use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use convoy_batcher::{
    BatchConfig, BatchFailed, BatchLayer, BatchPanicked, Closed, DeadlineExceeded, OverflowPolicy,
    Priority, QueueFull, ResponseFuture,
};
use convoy_batcher_scripted::{Ending, ItemError, Log, Scripted};
use parking_lot::Mutex;
use tokio::time::Instant;
use tokio_test::task::Spawn;
use tower::{BoxError, Service};

/// The message of a scripted panic (kept out of the fuzzer's output).
pub use convoy_batcher_scripted::PANIC_MESSAGE;

#[derive(Debug, Arbitrary)]
enum Op {
    Arrive {
        key: u8,
        priority: u8,
        cost: u8,
        deadline_ms: Option<u8>,
    },
    Cancel(u16),
    Advance(u8),
    Finish(u8, Ending),
    SetMaxBatchSize(u8),
    SetQueueCapacity(u8),
    Close,
    DropWorker,
}

#[derive(Debug, Arbitrary)]
struct Setup {
    max_batch_size: u8,
    max_cost: Option<u8>,
    max_concurrent: u8,
    max_wait_ms: u8,
    queue_capacity: u8,
    /// 255: `Duration::MAX`.
    queue_timeout_ms: Option<u8>,
    reject: bool,
    ops: Vec<Op>,
}

#[derive(Debug, Clone, Copy)]
struct Attrs {
    key: u64,
    priority: Priority,
    cost: u64,
    deadline: Option<Instant>,
}

struct Caller {
    future: Option<Spawn<ResponseFuture<u32>>>,
    cancelled: bool,
    result: Option<Result<u32, BoxError>>,
}

/// Polls the worker until it stops asking to be polled again.
fn drive<F: Future>(worker: &mut Spawn<F>) -> Poll<F::Output> {
    for _ in 0..10_000 {
        let p = worker.poll();
        if p.is_ready() || !worker.is_woken() {
            return p;
        }
    }
    panic!("the worker keeps waking itself without making progress");
}

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(setup) = Setup::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    crate::quiet_scripted_panics(PANIC_MESSAGE);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .expect("runtime");
    rt.block_on(run_case(setup));
}

async fn run_case(s: Setup) {
    let max_batch_size = usize::from(s.max_batch_size % 8) + 1;
    let max_cost = s.max_cost.map(|c| u64::from(c % 16) + 4);
    let capacity = usize::from(s.queue_capacity % 16) + 1;
    let mut config = BatchConfig::builder()
        .max_batch_size(max_batch_size)
        .max_concurrent_batches(usize::from(s.max_concurrent % 3) + 1)
        .max_wait(Duration::from_millis(u64::from(s.max_wait_ms % 6)))
        .queue_capacity(capacity)
        .overflow(if s.reject {
            OverflowPolicy::Reject
        } else {
            OverflowPolicy::Backpressure
        });
    if let Some(c) = max_cost {
        config = config.max_batch_cost(c);
    }
    let queue_timeout = s.queue_timeout_ms.map(|ms| match ms {
        255 => Duration::MAX,
        ms => Duration::from_millis(u64::from(ms % 50) + 1),
    });
    if let Some(t) = queue_timeout {
        config = config.queue_timeout(t);
    }
    let attrs: Arc<Mutex<Vec<Attrs>>> = Arc::default();
    let get = |a: &Arc<Mutex<Vec<Attrs>>>| {
        let a = a.clone();
        move |id: &u32| a.lock()[*id as usize]
    };
    let (a1, a2, a3, a4) = (get(&attrs), get(&attrs), get(&attrs), get(&attrs));
    let layer = BatchLayer::<u32, u32>::new(config.build().expect("valid config"))
        .key_fn(move |id| a1(id).key)
        .priority_fn(move |id| a2(id).priority)
        .cost_fn(move |id| a3(id).cost)
        .deadline_fn(move |id| a4(id).deadline);
    let log: Log = Arc::default();
    let (mut svc, worker) = layer.pair(Scripted::new(log.clone()));
    let handle = svc.handle();
    let mut worker = Some(tokio_test::task::spawn(worker));

    let mut callers: Vec<Caller> = Vec::new();
    let mut refused = 0u64;
    let mut batches = Batches::new(log);
    let mut cap = max_batch_size;
    let mut closed = false;
    let mut worker_gone = false;

    for op in s.ops.iter().take(256) {
        match *op {
            Op::Arrive {
                key,
                priority,
                cost,
                deadline_ms,
            } => {
                let id = callers.len() as u32;
                attrs.lock().push(Attrs {
                    key: u64::from(key % 3),
                    priority: match priority % 3 {
                        0 => Priority::Low,
                        1 => Priority::Normal,
                        _ => Priority::High,
                    },
                    // Now and then a cost far above any cap.
                    cost: if cost == 255 {
                        u64::MAX / 2
                    } else {
                        u64::from(cost % 8) + 1
                    },
                    deadline: deadline_ms
                        .map(|ms| Instant::now() + Duration::from_millis(ms.into())),
                });
                let mut ready =
                    tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
                match ready.poll() {
                    Poll::Ready(Ok(())) => {
                        drop(ready);
                        callers.push(Caller {
                            future: Some(tokio_test::task::spawn(svc.call(id))),
                            cancelled: false,
                            result: None,
                        });
                    }
                    Poll::Ready(Err(e)) => {
                        assert!(
                            e.is::<Closed>() && (closed || worker_gone),
                            "poll_ready failed while open: {e}"
                        );
                        refused += 1;
                        callers.push(Caller {
                            future: None,
                            cancelled: true,
                            result: None,
                        });
                    }
                    Poll::Pending => {
                        assert!(!s.reject, "a rejecting batcher must not pend in poll_ready");
                        // Backpressure: the caller gives up waiting.
                        refused += 1;
                        callers.push(Caller {
                            future: None,
                            cancelled: true,
                            result: None,
                        });
                    }
                }
            }
            Op::Cancel(i) => {
                if let Some(c) = callers.get_mut(usize::from(i)) {
                    if c.result.is_none() {
                        if let Some(mut f) = c.future.take() {
                            match f.poll() {
                                Poll::Ready(r) => c.result = Some(r),
                                Poll::Pending => c.cancelled = true,
                            }
                        }
                    }
                }
            }
            Op::Advance(ms) => {
                tokio::time::advance(Duration::from_millis(u64::from(ms % 12) + 1)).await
            }
            Op::Finish(i, ending) => {
                if !batches.running.is_empty() {
                    let bi = batches
                        .running
                        .remove(usize::from(i) % batches.running.len());
                    batches.end(bi, ending, worker_gone);
                }
            }
            Op::SetMaxBatchSize(n) => {
                let n = usize::from(n % 8) + 1;
                handle.set_max_batch_size(n).expect("a valid size");
                cap = cap.max(n);
            }
            Op::SetQueueCapacity(n) => {
                handle
                    .set_queue_capacity(usize::from(n % 16) + 1)
                    .expect("a valid capacity");
            }
            Op::Close => {
                handle.close();
                closed = true;
            }
            Op::DropWorker => {
                worker = None;
                worker_gone = true;
            }
        }
        if let Some(w) = worker.as_mut() {
            let _ = drive(w);
        }
        batches.check(&attrs, &callers, cap, max_cost);
        let stats = handle.stats();
        assert!(
            stats.queue_depth <= 16,
            "queue depth {} above every capacity",
            stats.queue_depth
        );
    }

    // Wind down: let every deadline pass, finish every batch.
    for _ in 0..300 {
        tokio::time::advance(Duration::from_millis(50)).await;
        for bi in std::mem::take(&mut batches.running) {
            batches.end(bi, Ending::Ok, worker_gone);
        }
        if let Some(w) = worker.as_mut() {
            let _ = drive(w);
        }
        batches.check(&attrs, &callers, cap, max_cost);
        if batches.running.is_empty() {
            break;
        }
    }
    assert!(batches.running.is_empty(), "batches kept coming");

    let mut answered = 0u64;
    for (id, c) in callers.iter_mut().enumerate() {
        let id = id as u32;
        if c.cancelled {
            continue;
        }
        let result = match c.result.take() {
            Some(r) => r,
            None => match c.future.as_mut().expect("admitted").poll() {
                Poll::Ready(r) => r,
                Poll::Pending => panic!("caller {id} hangs"),
            },
        };
        answered += 1;
        let Some(&bi) = batches.dispatched.get(&id) else {
            let err = result.expect_err("an undispatched item cannot succeed");
            assert!(
                err.is::<DeadlineExceeded>() || err.is::<Closed>() || err.is::<QueueFull>(),
                "item {id} never dispatched but got: {err}"
            );
            if err.is::<Closed>() {
                assert!(worker_gone, "item {id} closed out while the worker lived");
            }
            continue;
        };
        match batches.endings.get(&bi).copied() {
            None => {
                // Its batch was still running when the worker was dropped.
                assert!(worker_gone, "item {id}: batch {bi} never ended");
                let err = result.expect_err("a dropped batch cannot succeed");
                assert!(err.is::<Closed>(), "item {id}: {err}");
            }
            Some(Ending::Ok) if id % 5 == 4 => {
                assert!(result.expect_err("item error").is::<ItemError>())
            }
            Some(Ending::Ok) => assert_eq!(result.expect("answer"), id),
            Some(Ending::Fail | Ending::Short | Ending::Long) => {
                let err = result.expect_err("failed batch");
                assert!(err.is::<BatchFailed>(), "item {id}: {err}");
            }
            Some(Ending::Panic) => {
                let err = result.expect_err("panicked batch");
                assert!(err.is::<BatchPanicked>(), "item {id}: {err}");
            }
        }
    }
    let stats = handle.stats();
    assert_eq!(stats.queue_depth, 0, "items left in the queue");
    assert!(
        stats.admitted_total <= callers.len() as u64 - refused,
        "admitted {} of {} callers ({} refused)",
        stats.admitted_total,
        callers.len(),
        refused
    );
    assert!(answered <= stats.admitted_total + stats.rejected.total());
}

/// The batches the model received, as the check sees them.
struct Batches {
    log: Log,
    /// Batches of the log already checked.
    seen: usize,
    /// Checked batches not ended yet.
    running: Vec<usize>,
    /// Which batch each dispatched item went out in.
    dispatched: HashMap<u32, usize>,
    /// How each ended batch ended (only while the worker could see it).
    endings: HashMap<usize, Ending>,
}

impl Batches {
    fn new(log: Log) -> Self {
        Self {
            log,
            seen: 0,
            running: Vec::new(),
            dispatched: HashMap::new(),
            endings: HashMap::new(),
        }
    }

    /// Ends batch `bi` as `ending` (once).
    fn end(&mut self, bi: usize, ending: Ending, worker_gone: bool) {
        if let Some(tx) = self.log.lock()[bi].2.take() {
            if !worker_gone {
                self.endings.insert(bi, ending);
            }
            let _ = tx.send(ending);
        }
    }

    /// Checks the batches dispatched since the last call.
    fn check(
        &mut self,
        attrs: &Arc<Mutex<Vec<Attrs>>>,
        callers: &[Caller],
        cap: usize,
        max_cost: Option<u64>,
    ) {
        let log = self.log.lock();
        let attrs = attrs.lock();
        for (bi, (batch, at, _)) in log.iter().enumerate().skip(self.seen) {
            assert!(!batch.is_empty(), "empty batch");
            assert!(
                batch.len() <= cap,
                "batch of {} above cap {cap}",
                batch.len()
            );
            let key = attrs[batch[0] as usize].key;
            assert!(
                batch.iter().all(|&id| attrs[id as usize].key == key),
                "mixed keys: {batch:?}"
            );
            if let Some(c) = max_cost {
                let cost = batch
                    .iter()
                    .fold(0u64, |sum, &id| sum.saturating_add(attrs[id as usize].cost));
                assert!(cost <= c || batch.len() == 1, "cost {cost} > {c}");
            }
            for &id in batch {
                if let Some(d) = attrs[id as usize].deadline {
                    assert!(*at < d, "expired item {id} dispatched");
                }
                assert!(
                    !callers[id as usize].cancelled,
                    "cancelled item {id} dispatched"
                );
                assert!(
                    self.dispatched.insert(id, bi).is_none(),
                    "item {id} dispatched twice"
                );
            }
            self.running.push(bi);
        }
        self.seen = log.len();
    }
}
