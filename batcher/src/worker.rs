//! The background task that owns the queue and drives the batch service.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::future::CatchUnwind;
use futures::FutureExt;
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower::{BoxError, Service};
use tracing::instrument::Instrumented;
use tracing::Instrument;

use crate::adaptive::Adaptive;
use crate::error::{BatchFailed, BatchPanicked, LengthMismatch};
use crate::queue::{PendingQueue, Pick, Policy, Removed};
use crate::results::IntoItemResults;
use crate::shared::{Control, Item, Sender, Shared};
use crate::stats::{Outcome, Rejection};
use crate::telemetry::Handles;

/// Most loop turns before the worker yields to the runtime.
const BUDGET: usize = 64;
/// Gauges are set at most this often while the batcher is busy.
const GAUGE_INTERVAL: Duration = Duration::from_millis(1);
/// Expired items are swept out at most this often.
const SWEEP_GRANULARITY: Duration = Duration::from_millis(1);

/// The batcher's background task; it owns the queue and the batch service.
///
/// [`BatchLayer`](crate::BatchLayer) spawns it on the current tokio runtime.
/// Use [`BatchLayer::pair`](crate::BatchLayer::pair) to run it yourself. It
/// ends once every [`Batch`](crate::Batch) handle is dropped (or the batcher
/// is closed) and the queue is drained. If it is dropped early, every queued
/// caller gets [`Closed`](crate::Closed).
#[must_use = "the worker does nothing unless polled or spawned"]
pub struct Worker<S, Req, Resp>
where
    S: Service<Vec<Req>>,
{
    shared: Arc<Shared<Req, Resp>>,
    service: S,
    /// Swapped with the inbound list so both keep their capacity.
    spare: Vec<Item<Req, Resp>>,
    queue: PendingQueue<Req, Resp>,
    /// One pinned slot per concurrent batch, allocated once.
    in_flight: Vec<Slot<S::Future, Resp>>,
    running: usize,
    /// Emptied caller lists of finished batches, reused.
    spare_senders: Vec<Vec<Sender<Resp>>>,
    handles: Handles,
    policy: Policy,
    timer: Option<Pin<Box<Sleep>>>,
    next_sweep: Option<Instant>,
    waits: Vec<u64>,
    yielded: bool,
    /// Callers answered by the most recently finished batch.
    last_fanout: usize,
    /// Last published (queue depth, in-flight batches) and when.
    gauges: ((usize, usize), Option<Instant>),
    /// The adaptive batch-size cap, when configured.
    adaptive: Option<Adaptive>,
    /// The batch service failed for good: no more dispatches; running
    /// batches still finish.
    failed: bool,
    finished: bool,
}

// The service is never pinned: it is only used through `&mut`.
impl<S: Service<Vec<Req>>, Req, Resp> Unpin for Worker<S, Req, Resp> {}

impl<S, Req, Resp> fmt::Debug for Worker<S, Req, Resp>
where
    S: Service<Vec<Req>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("name", &self.shared.control.name)
            .field("queued", &self.queue.len())
            .field("in_flight", &self.running)
            .field("policy", &self.policy)
            .finish_non_exhaustive()
    }
}

impl<S, Req, Resp> Worker<S, Req, Resp>
where
    S: Service<Vec<Req>>,
    S::Error: Into<BoxError>,
    S::Response: IntoItemResults<Resp>,
{
    pub(crate) fn new(
        shared: Arc<Shared<Req, Resp>>,
        service: S,
        max_concurrent: usize,
        max_cost: Option<u64>,
    ) -> Self {
        debug_assert!(max_concurrent > 0);
        let control = &shared.control;
        let max_batch_size = control.max_batch_size.load(Ordering::Relaxed);
        let adaptive = control
            .adaptive
            .map(|config| Adaptive::new(config, max_batch_size));
        let policy = Policy {
            max_batch_size,
            cap: adaptive.as_ref().map_or(usize::MAX, Adaptive::cap),
            max_wait: control.max_wait(),
            preferred: control.preferred.lock().clone(),
            max_cost,
        };
        Self {
            shared,
            service,
            spare: Vec::with_capacity(64),
            queue: PendingQueue::new(),
            in_flight: (0..max_concurrent).map(|_| Box::pin(None)).collect(),
            running: 0,
            spare_senders: Vec::new(),
            handles: Handles::new(),
            policy,
            timer: None,
            next_sweep: None,
            waits: Vec::new(),
            yielded: false,
            last_fanout: 0,
            gauges: ((0, 0), None),
            adaptive,
            failed: false,
            finished: false,
        }
    }

    fn control(&self) -> &Control {
        &self.shared.control
    }

    /// Moves everything callers queued into the worker's queue. Returns
    /// whether admission is over.
    fn take_inbound(&mut self) -> bool {
        let closing = self.control().closing.load(Ordering::Acquire);
        {
            let mut inbound = self.shared.inbound.lock();
            if closing {
                inbound.closed = true;
            }
            if inbound.items.is_empty() {
                return closing;
            }
            std::mem::swap(&mut inbound.items, &mut self.spare);
        }
        let n = self.spare.len();
        let mut earliest = self.next_sweep;
        for item in self.spare.drain(..) {
            if let Some(d) = item.deadline {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
            self.queue.push(item);
        }
        self.next_sweep = earliest;
        let stats = &self.shared.control.stats;
        stats.admitted.fetch_add(n as u64, Ordering::Relaxed);
        closing
    }

    fn refresh_policy(&mut self) {
        let control = &self.shared.control;
        if control.settings_changed.swap(false, Ordering::AcqRel) {
            self.policy.max_batch_size = control.max_batch_size.load(Ordering::Relaxed);
            self.policy.max_wait = control.max_wait();
            self.policy.preferred = control.preferred.lock().clone();
            if let Some(adaptive) = &mut self.adaptive {
                adaptive.set_max(self.policy.max_batch_size);
                self.publish_cap();
            }
        }
    }

    /// Applies the adaptive cap to the next batches and publishes the
    /// chosen one.
    fn publish_cap(&mut self) {
        if let Some(adaptive) = &self.adaptive {
            self.policy.cap = adaptive.cap();
            let chosen = adaptive.chosen();
            let control = &self.shared.control;
            if control.batch_size_cap.swap(chosen, Ordering::Relaxed) != chosen {
                self.handles.batch_size_cap.set(chosen as f64);
            }
        }
    }

    fn count_removed(&self, removed: &Removed) {
        let control = self.control();
        if removed.cancelled > 0 {
            control
                .stats
                .cancelled
                .fetch_add(removed.cancelled, Ordering::Relaxed);
            self.handles.cancelled.increment(removed.cancelled);
        }
        if removed.expired > 0 {
            control.stats.rejected[Rejection::DeadlineExceeded as usize]
                .fetch_add(removed.expired, Ordering::Relaxed);
            self.handles.deadline_exceeded.increment(removed.expired);
        }
        let gone = removed.cancelled + removed.expired;
        control.release_permits(gone as usize);
    }

    fn sweep(&mut self, now: Instant) {
        let mut removed = Removed::default();
        let earliest = self.queue.sweep(now, &mut removed);
        self.next_sweep = earliest.map(|e| e.max(now + SWEEP_GRANULARITY));
        self.count_removed(&removed);
    }

    /// Forms one batch from group `gi`, starts it in free slot `slot` and
    /// polls it once. Returns how many items went out.
    fn dispatch(
        &mut self,
        slot: usize,
        gi: usize,
        target: usize,
        now: Instant,
        cx: &mut Context<'_>,
    ) -> usize {
        let control = &self.shared.control;
        let span = tracing::info_span!(
            "convoy_batch",
            batcher = %control.name,
            size = tracing::field::Empty
        );
        let follow = !span.is_disabled();
        let mut reqs = Vec::with_capacity(target);
        let mut senders = self.spare_senders.pop().unwrap_or_default();
        let waits = &mut self.waits;
        waits.clear();
        let taken = self.queue.take(gi, target, self.policy.max_cost, |item| {
            if follow {
                span.follows_from(&item.span);
            }
            waits.push(
                u64::try_from(now.saturating_duration_since(item.enqueued).as_nanos())
                    .unwrap_or(u64::MAX),
            );
            reqs.push(item.req);
            senders.push(item.tx);
        });
        if taken == 0 {
            self.spare_senders.push(senders);
            return 0;
        }
        self.shared.control.release_permits(taken);
        span.record("size", taken);
        self.record_dispatch(taken);

        match std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(reqs))) {
            Ok(fut) => {
                let fut = AssertUnwindSafe(fut.instrument(span)).catch_unwind();
                self.in_flight[slot].set(Some(InFlight {
                    fut,
                    senders,
                    started: now,
                }));
                self.running += 1;
                self.poll_slot(slot, cx);
            }
            Err(panic) => {
                let err = BatchPanicked::from_payload(&*panic);
                for tx in senders.drain(..) {
                    let _ = tx.send(Err(err.clone().into()));
                }
                self.record_done(Done {
                    size: taken,
                    took: Duration::ZERO,
                    outcome: Outcome::Panicked,
                    senders,
                });
            }
        }
        self.shared
            .control
            .stats
            .in_flight
            .store(self.running, Ordering::Relaxed);
        taken
    }

    /// Polls the batch in `slot`; frees the slot if it finished.
    fn poll_slot(&mut self, slot: usize, cx: &mut Context<'_>) -> bool {
        let Some(batch) = self.in_flight[slot].as_mut().as_pin_mut() else {
            return false;
        };
        match batch.poll(cx) {
            Poll::Ready(done) => {
                self.in_flight[slot].set(None);
                self.running -= 1;
                self.record_done(done);
                true
            }
            Poll::Pending => false,
        }
    }

    fn record_dispatch(&mut self, size: usize) {
        let stats = &self.shared.control.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        stats.in_flight_items.fetch_add(size, Ordering::Relaxed);
        stats.queued.store(self.queue.len(), Ordering::Relaxed);
        {
            let mut recent = stats.recent.lock();
            recent.batch_sizes.push(size as u64);
            for &w in &self.waits {
                recent.queue_waits.push(w);
            }
        }
        let h = &self.handles;
        h.batch_size.record(size as f64);
        h.record_waits(&self.waits);
    }

    /// Sets the queue-depth and in-flight gauges when they changed, at most
    /// once a millisecond while busy; the idle state is always published.
    fn publish_gauges(&mut self, now: Option<Instant>) {
        let state = (self.queue.len(), self.running);
        if state == self.gauges.0 {
            return;
        }
        let idle = state == (0, 0);
        let due = match (now, self.gauges.1) {
            (Some(now), Some(last)) => now >= last + GAUGE_INTERVAL,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if idle || due {
            self.handles.queue_depth.set(state.0 as f64);
            self.handles.in_flight.set(state.1 as f64);
            self.gauges = (state, now.or(self.gauges.1));
        }
    }

    fn record_done(&mut self, mut done: Done<Resp>) {
        self.last_fanout = done.size;
        let stats = &self.shared.control.stats;
        stats
            .completed
            .fetch_add(done.size as u64, Ordering::Relaxed);
        stats.in_flight.store(self.running, Ordering::Relaxed);
        stats
            .in_flight_items
            .fetch_sub(done.size, Ordering::Relaxed);
        stats.recent.lock().record_service(done.size, done.took);
        let h = &self.handles;
        h.service.record(done.took.as_secs_f64());
        h.batches[done.outcome as usize].increment(1);
        if let (Some(adaptive), Outcome::Ok) = (&mut self.adaptive, done.outcome) {
            adaptive.record(done.size, done.took);
            self.publish_cap();
        }
        done.senders.clear();
        if self.spare_senders.len() < self.in_flight.len() {
            self.spare_senders.push(done.senders);
        }
    }

    /// The batch service failed for good: fail everything queued with its
    /// error and stop admitting; running batches still finish.
    fn fail_all(&mut self, err: BoxError) {
        self.failed = true;
        let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(err);
        self.control().close();
        {
            let mut inbound = self.shared.inbound.lock();
            inbound.closed = true;
            std::mem::swap(&mut inbound.items, &mut self.spare);
        }
        let mut n = self.spare.len();
        for item in self.spare.drain(..) {
            let _ = item.tx.send(Err(BatchFailed::new(source.clone()).into()));
        }
        for item in self.queue.drain_all() {
            n += 1;
            let _ = item.tx.send(Err(BatchFailed::new(source.clone()).into()));
        }
        self.control().release_permits(n);
    }
}

impl<S, Req, Resp> Future for Worker<S, Req, Resp>
where
    S: Service<Vec<Req>>,
    S::Error: Into<BoxError>,
    S::Response: IntoItemResults<Resp>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        if this.finished {
            return Poll::Ready(());
        }
        // Registered before the inbound list is read, so an item pushed
        // after that read wakes this task again.
        this.shared.control.worker.register(cx.waker());
        // A caller's push puts this task in the runtime's LIFO slot, right
        // behind that caller: dispatching at once would send batches of
        // one while other callers are ready to push. When other callers
        // may exist (several request handles alive, or the last batch
        // answered several callers), yield once so they can.
        if !this.yielded
            && this.running < this.in_flight.len()
            && (this.last_fanout > 1 || this.shared.control.senders.load(Ordering::Relaxed) > 2)
        {
            this.yielded = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.yielded = false;
        // One clock read per poll: the decisions below need no finer time.
        let mut now = None;
        for _ in 0..BUDGET {
            if this.running > 0 {
                for slot in 0..this.in_flight.len() {
                    this.poll_slot(slot, cx);
                }
            }

            let closing = this.take_inbound();
            this.refresh_policy();
            if let Some(at) = this.next_sweep {
                let t = *now.get_or_insert_with(Instant::now);
                if at <= t {
                    this.sweep(t);
                }
            }

            let mut dispatched = false;
            let mut wait_until = None;
            while !this.failed && this.running < this.in_flight.len() && !this.queue.is_empty() {
                let t = *now.get_or_insert_with(Instant::now);
                let (gi, target) = match this.queue.pick(t, &this.policy) {
                    Pick::Go { group, target } => (group, target),
                    Pick::WaitUntil(at) => {
                        wait_until = Some(at);
                        break;
                    }
                    Pick::Empty => break,
                };
                // Drop dead items first: the batch service is reserved only
                // for a batch that goes out. If any went, decide again.
                let mut removed = Removed::default();
                let pruned = this.queue.prune(gi, target, t, &mut removed);
                this.count_removed(&removed);
                if pruned {
                    continue;
                }
                match this.service.poll_ready(cx) {
                    Poll::Pending => break,
                    Poll::Ready(Err(err)) => {
                        this.fail_all(err.into());
                        break;
                    }
                    Poll::Ready(Ok(())) => {}
                }
                let cap = this.adaptive.as_ref().map(Adaptive::chosen);
                this.handles.refresh(&this.shared.control.telemetry, t, cap);
                let slot = this
                    .in_flight
                    .iter()
                    .position(|s| s.is_none())
                    .expect("a slot is free while running < max_concurrent");
                if this.dispatch(slot, gi, target, t, cx) > 0 {
                    dispatched = true;
                }
            }
            this.shared
                .control
                .stats
                .queued
                .store(this.queue.len(), Ordering::Relaxed);
            this.publish_gauges(now);
            if dispatched {
                // New items may have arrived meanwhile.
                continue;
            }

            if (closing || this.failed) && this.queue.is_empty() && this.running == 0 {
                this.finished = true;
                return Poll::Ready(());
            }

            let wake_at = match (wait_until, this.next_sweep) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            if let Some(at) = wake_at {
                let timer = this
                    .timer
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
                if timer.deadline() != at {
                    timer.as_mut().reset(at);
                }
                if timer.as_mut().poll(cx).is_ready() {
                    now = None;
                    continue;
                }
            }
            return Poll::Pending;
        }
        // Out of budget: let other tasks run, then carry on.
        cx.waker().wake_by_ref();
        Poll::Pending
    }
}

impl<S, Req, Resp> Drop for Worker<S, Req, Resp>
where
    S: Service<Vec<Req>>,
{
    fn drop(&mut self) {
        // Nobody may hang: refuse new items and drop queued ones, whose
        // callers then see `Closed`.
        let control = &self.shared.control;
        control.closing.store(true, Ordering::Release);
        control.semaphore.close();
        let items = {
            let mut inbound = self.shared.inbound.lock();
            inbound.closed = true;
            std::mem::take(&mut inbound.items)
        };
        let n = items.len() + self.queue.len();
        if n > 0 && !self.finished {
            control
                .stats
                .reject_n(Rejection::Closed, n as u64, &control.telemetry);
        }
        drop(items);
        self.queue.drain_all().for_each(drop);
        control.stats.queued.store(0, Ordering::Relaxed);
    }
}

/// Room for one running batch, pinned once and reused.
type Slot<F, Resp> = Pin<Box<Option<InFlight<F, Resp>>>>;

/// Outcome of one finished batch, for the statistics.
#[derive(Debug)]
struct Done<Resp> {
    size: usize,
    took: Duration,
    outcome: Outcome,
    /// The emptied caller list, for reuse.
    senders: Vec<Sender<Resp>>,
}

pin_project! {
    /// A running batch: the batch service's future and its callers.
    struct InFlight<F, Resp> {
        #[pin]
        fut: CatchUnwind<AssertUnwindSafe<Instrumented<F>>>,
        senders: Vec<Sender<Resp>>,
        started: Instant,
    }
}

impl<F, R, E, Resp> Future for InFlight<F, Resp>
where
    F: Future<Output = Result<R, E>>,
    R: IntoItemResults<Resp>,
    E: Into<BoxError>,
{
    type Output = Done<Resp>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done<Resp>> {
        let this = self.project();
        let result = std::task::ready!(this.fut.poll(cx));
        let took = this.started.elapsed();
        let mut slots = std::mem::take(this.senders);
        let size = slots.len();
        let outcome = match result {
            Ok(Ok(response)) => {
                let results = response.into_item_results();
                if results.len() == size {
                    for (tx, result) in slots.drain(..).zip(results) {
                        let _ = tx.send(result);
                    }
                    Outcome::Ok
                } else {
                    let err = Arc::new(LengthMismatch {
                        expected: size,
                        actual: results.len(),
                    });
                    for tx in slots.drain(..) {
                        let _ = tx.send(Err(BatchFailed::new(err.clone()).into()));
                    }
                    Outcome::Failed
                }
            }
            Ok(Err(err)) => {
                let source: Arc<dyn std::error::Error + Send + Sync> = Arc::from(err.into());
                for tx in slots.drain(..) {
                    let _ = tx.send(Err(BatchFailed::new(source.clone()).into()));
                }
                Outcome::Failed
            }
            Err(panic) => {
                let err = BatchPanicked::from_payload(&*panic);
                for tx in slots.drain(..) {
                    let _ = tx.send(Err(err.clone().into()));
                }
                Outcome::Panicked
            }
        };
        Poll::Ready(Done {
            size,
            took,
            outcome,
            senders: slots,
        })
    }
}
