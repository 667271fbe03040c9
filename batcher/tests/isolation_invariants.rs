//! Property test of failure isolation under random arrivals, batch sizes,
//! poisonous requests (the batch service fails every batch that holds one:
//! an error, a panicking future or a panic in `call`), cancellations,
//! deadlines and pass bounds:
//! - every admitted caller gets exactly one answer; with enough passes,
//!   exactly the poisonous callers fail, and every other caller gets its
//!   own answer (or its own per-item error, never retried);
//! - a request runs again only after the batch it was in failed, with the
//!   rest of one half of that batch, never after its caller left or its
//!   deadline passed;
//! - when the passes run out, what still fails gets the batch's error;
//! - with isolation off, a failed batch fails all of its callers and
//!   nothing runs twice;
//! - the counters match what ran.

mod support;

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_batcher::{
    BatchConfig, BatchFailed, BatchLayer, BatchPanicked, DeadlineExceeded, ResponseFuture,
};
use convoy_batcher_scripted::ItemError;
use parking_lot::Mutex;
use proptest::prelude::*;
use support::drive;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_test::task::Spawn;
use tower::{BoxError, Service};

const PANIC_MESSAGE: &str = "poisoned batch";
const IDS: usize = 48;

#[derive(Debug, Clone, Copy, PartialEq)]
enum How {
    Error,
    Panic,
    PanicInCall,
}

/// Requests with these ids get a per-item error from a batch that succeeds.
fn item_error(id: u32) -> bool {
    id % 7 == 6
}

fn answer_of(id: u32) -> u32 {
    id * 3 + 1
}

struct Run {
    ids: Vec<u32>,
    at: Instant,
    poisoned: bool,
    /// Ends the run; `None` once the test ended it (or `call` panicked).
    finish: Option<oneshot::Sender<()>>,
}

type Runs = Arc<Mutex<Vec<Run>>>;

/// A batch service that fails every batch holding a poisonous id; its
/// batches end when the test says.
#[derive(Clone)]
struct Model {
    runs: Runs,
    poison: Arc<Vec<bool>>,
    how: How,
}

impl Service<Vec<u32>> for Model {
    type Response = Vec<Result<u32, ItemError>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<u32>) -> Self::Future {
        let poisoned = batch.iter().any(|&id| self.poison[id as usize]);
        let in_call = poisoned && self.how == How::PanicInCall;
        let (tx, rx) = oneshot::channel();
        self.runs.lock().push(Run {
            ids: batch.clone(),
            at: Instant::now(),
            poisoned,
            finish: (!in_call).then_some(tx),
        });
        if in_call {
            panic!("{PANIC_MESSAGE}");
        }
        let how = self.how;
        Box::pin(async move {
            if rx.await.is_err() {
                return Err("test dropped the batch".into());
            }
            match (poisoned, how) {
                (false, _) => Ok(batch
                    .into_iter()
                    .map(|id| {
                        if item_error(id) {
                            Err(ItemError)
                        } else {
                            Ok(answer_of(id))
                        }
                    })
                    .collect()),
                (true, How::Error) => Err("poisoned batch".into()),
                (true, _) => panic!("{PANIC_MESSAGE}"),
            }
        })
    }
}

#[derive(Debug, Clone)]
enum Op {
    Arrive,
    Cancel(usize),
    Advance(u64),
    Finish(usize),
}

#[derive(Debug, Clone)]
struct Setup {
    max_batch_size: usize,
    max_concurrent: usize,
    /// `None`: isolation off.
    passes: Option<u32>,
    how: How,
    poison: Vec<bool>,
    /// Deadline in ms after the start, per id.
    deadlines: Vec<Option<u64>>,
    ops: Vec<Op>,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => Just(Op::Arrive),
        1 => (0usize..IDS).prop_map(Op::Cancel),
        1 => (1u64..10).prop_map(Op::Advance),
        3 => (0usize..8).prop_map(Op::Finish),
    ]
}

fn setup() -> impl Strategy<Value = Setup> {
    (
        1usize..=8,
        1usize..=2,
        prop_oneof![1 => Just(None), 4 => (1u32..=4).prop_map(Some)],
        prop_oneof![Just(How::Error), Just(How::Panic), Just(How::PanicInCall)],
        proptest::collection::vec(proptest::bool::weighted(0.15), IDS),
        proptest::collection::vec(proptest::option::weighted(0.2, 1u64..60), IDS),
        proptest::collection::vec(op(), 1..80),
    )
        .prop_map(
            |(max_batch_size, max_concurrent, passes, how, poison, deadlines, ops)| Setup {
                max_batch_size,
                max_concurrent,
                passes,
                how,
                poison,
                deadlines,
                ops,
            },
        )
}

struct Caller {
    future: Option<Spawn<ResponseFuture<u32>>>,
    cancelled: bool,
    result: Option<Result<u32, BoxError>>,
}

/// What the test saw run.
#[derive(Default)]
struct Seen {
    checked: usize,
    /// Runs started and not yet ended.
    running: Vec<usize>,
    /// Per id, the runs it was in, in order.
    runs_of: HashMap<u32, Vec<usize>>,
}

fn run(s: Setup) -> Result<(), TestCaseError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap();
    rt.block_on(run_case(s))
}

async fn run_case(s: Setup) -> Result<(), TestCaseError> {
    let start = Instant::now();
    let deadline_of =
        |id: u32| s.deadlines[id as usize].map(|ms| start + Duration::from_millis(ms));
    let mut config = BatchConfig::builder()
        .max_batch_size(s.max_batch_size)
        .max_concurrent_batches(s.max_concurrent)
        .queue_capacity(64);
    config = match s.passes {
        Some(n) => config.max_isolation_passes(n),
        None => config.failure_isolation(false),
    };
    let deadlines = s.deadlines.clone();
    let layer = BatchLayer::<u32, u32>::new(config.build().unwrap())
        .isolate_failures()
        .deadline_fn(move |&id| deadlines[id as usize].map(|ms| start + Duration::from_millis(ms)));
    let runs: Runs = Arc::default();
    let model = Model {
        runs: runs.clone(),
        poison: Arc::new(s.poison.clone()),
        how: s.how,
    };
    let (mut svc, worker) = layer.pair(model);
    let mut worker = tokio_test::task::spawn(worker);
    let mut callers: Vec<Caller> = Vec::new();
    let mut seen = Seen::default();

    // Checks the runs that started since the last look.
    let check_new_runs = |seen: &mut Seen, callers: &[Caller]| -> Result<(), TestCaseError> {
        let log = runs.lock();
        for (ri, r) in log.iter().enumerate().skip(seen.checked) {
            prop_assert!(!r.ids.is_empty());
            prop_assert!(r.ids.len() <= s.max_batch_size, "run too big: {:?}", r.ids);
            let before = |id: &u32| seen.runs_of.get(id).and_then(|v| v.last().copied());
            let previous = before(&r.ids[0]);
            for id in &r.ids {
                // A run is checked in the step that started it, so a caller
                // that left in this step or before must not be in it.
                prop_assert!(
                    !callers[*id as usize].cancelled,
                    "{id} ran after its caller left"
                );
                if let Some(d) = deadline_of(*id) {
                    prop_assert!(r.at < d, "{id} ran after its deadline");
                }
                prop_assert_eq!(
                    before(id),
                    previous,
                    "run {:?} mixes requests of different batches",
                    &r.ids
                );
            }
            if let Some(p) = previous {
                prop_assert!(s.passes.is_some(), "a request ran twice with isolation off");
                prop_assert!(
                    log[p].poisoned && !seen.running.contains(&p),
                    "{:?} ran again before its batch failed",
                    &r.ids
                );
                prop_assert!(2 * r.ids.len() <= log[p].ids.len() + 1, "not a half");
            }
            for id in &r.ids {
                seen.runs_of.entry(*id).or_default().push(ri);
            }
            if r.finish.is_some() {
                seen.running.push(ri);
            }
        }
        seen.checked = log.len();
        Ok(())
    };

    for op in &s.ops {
        match op {
            Op::Arrive => {
                if callers.len() < IDS {
                    let id = callers.len() as u32;
                    callers.push(Caller {
                        future: Some(support::call(&mut svc, id)),
                        cancelled: false,
                        result: None,
                    });
                }
            }
            Op::Cancel(i) => {
                if let Some(c) = callers.get_mut(*i) {
                    if let Some(mut f) = c.future.take() {
                        // Dropping a finished future is not a cancellation.
                        match f.poll() {
                            Poll::Ready(r) => c.result = Some(r),
                            Poll::Pending => c.cancelled = true,
                        }
                    }
                }
            }
            Op::Advance(ms) => tokio::time::advance(Duration::from_millis(*ms)).await,
            Op::Finish(i) => {
                if !seen.running.is_empty() {
                    let ri = seen.running.remove(i % seen.running.len());
                    if let Some(tx) = runs.lock()[ri].finish.take() {
                        let _ = tx.send(());
                    }
                }
            }
        }
        prop_assert!(drive(&mut worker).is_pending());
        check_new_runs(&mut seen, &callers)?;
    }

    // Wind down: let every deadline pass, end every run, until none starts.
    for _ in 0..200 {
        tokio::time::advance(Duration::from_millis(50)).await;
        for ri in seen.running.drain(..) {
            if let Some(tx) = runs.lock()[ri].finish.take() {
                let _ = tx.send(());
            }
        }
        prop_assert!(drive(&mut worker).is_pending());
        check_new_runs(&mut seen, &callers)?;
        if seen.running.is_empty() {
            break;
        }
    }
    prop_assert!(seen.running.is_empty(), "runs kept coming");

    let log = runs.lock();
    let failure_kind = |err: &BoxError| match s.how {
        How::Error => err.is::<BatchFailed>(),
        How::Panic | How::PanicInCall => err.is::<BatchPanicked>(),
    };
    // Enough passes to single out any request of a full batch.
    let enough = s.passes.is_some_and(|n| 1usize << n >= s.max_batch_size);
    for (id, c) in callers.iter_mut().enumerate() {
        let id = id as u32;
        if c.cancelled {
            continue;
        }
        let result = match c.result.take() {
            Some(r) => r,
            None => match c.future.as_mut().unwrap().poll() {
                Poll::Ready(r) => r,
                Poll::Pending => return Err(TestCaseError::fail(format!("caller {id} hangs"))),
            },
        };
        let poisonous = s.poison[id as usize];
        let Some(mine) = seen.runs_of.get(&id) else {
            let err = result.expect_err("a request that never ran cannot succeed");
            prop_assert!(err.is::<DeadlineExceeded>(), "{id}: {err}");
            continue;
        };
        let last = &log[*mine.last().unwrap()];
        let pass = mine.len() as u32 - 1;
        if !last.poisoned {
            prop_assert!(!poisonous);
            match result {
                Ok(answer) => {
                    prop_assert!(!item_error(id));
                    prop_assert_eq!(answer, answer_of(id));
                }
                Err(e) => prop_assert!(item_error(id) && e.is::<ItemError>(), "{id}: {e}"),
            }
            continue;
        }
        let err = result.expect_err("a request whose last run failed cannot succeed");
        let split = s.passes.is_some_and(|n| pass < n) && last.ids.len() > 1;
        if split {
            // Its half had not run again when its deadline passed.
            prop_assert!(err.is::<DeadlineExceeded>(), "{id}: {err}");
            prop_assert!(deadline_of(id).is_some());
        } else {
            prop_assert!(failure_kind(&err), "{id}: {err}");
            match s.passes {
                None => prop_assert_eq!(mine.len(), 1),
                // Alone, or in a part the passes ran out on.
                Some(n) => prop_assert!(last.ids.len() == 1 || pass == n),
            }
            prop_assert!(
                poisonous || !enough,
                "{id} is not poisonous but got {err} with {:?} passes",
                s.passes
            );
        }
    }

    let stats = svc.handle().stats();
    prop_assert_eq!(stats.queue_depth, 0);
    prop_assert_eq!(stats.in_flight_items, 0);
    prop_assert_eq!(stats.admitted_total, callers.len() as u64);
    prop_assert_eq!(stats.batches_total, log.len() as u64);
    // Runs of one request that failed, other than a first run.
    let isolated = seen
        .runs_of
        .values()
        .flat_map(|mine| mine.iter().skip(1))
        .filter(|&&ri| log[ri].poisoned && log[ri].ids.len() == 1)
        .count();
    prop_assert_eq!(stats.isolated_failures_total, isolated as u64);
    // Per failed batch from the queue, the deepest pass any of its
    // requests ran in.
    let mut deepest: HashMap<usize, usize> = HashMap::new();
    for mine in seen.runs_of.values() {
        let depth = deepest.entry(mine[0]).or_default();
        *depth = (*depth).max(mine.len() - 1);
    }
    prop_assert_eq!(
        stats.isolation_passes_total,
        deepest.values().sum::<usize>() as u64
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn exactly_the_poisonous_callers_fail(s in setup()) {
        support::quiet_panics(PANIC_MESSAGE);
        run(s)?;
    }
}
