//! The background task that owns the queue and drives the batch service.

use std::fmt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicU32, Ordering};
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
use crate::config::WaitFor;
use crate::error::{BatchFailed, BatchPanicked, LengthMismatch};
use crate::isolate::{Kept, Retries, Retry};
use crate::limit::SizeLimit;
use crate::queue::{Load, PendingQueue, Pick, Policy, Removed};
use crate::results::IntoItemResults;
use crate::shared::{Control, Item, RequestFn, Sender, Shared, TooLargeFn};
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
    /// Parts of failed batches waiting to run again; they go before the queue.
    retries: Retries<Req, Resp>,
    /// Most extra passes per failed batch, when failures are isolated.
    isolation: Option<u32>,
    /// One pinned slot per concurrent batch, allocated once.
    in_flight: Vec<Slot<S::Future, Req, Resp>>,
    running: usize,
    /// Emptied caller lists of finished batches, reused.
    spare_senders: Vec<Vec<Sender<Resp>>>,
    /// Emptied request copies of finished batches, reused.
    spare_kept: Vec<Vec<Kept<Req>>>,
    handles: Handles,
    policy: Policy,
    timer: Option<Pin<Box<Sleep>>>,
    next_sweep: Option<Instant>,
    waits: Vec<u64>,
    yielded: bool,
    /// Callers answered by the most recently finished batch.
    last_fanout: usize,
    /// Under `WaitFor::RecentLoad`: the most callers held at once (queued
    /// or running) since each of the last batches went out, and since the
    /// latest one.
    load: Option<LoadWindow>,
    /// Last published (queue depth, in-flight batches) and when.
    gauges: ((usize, usize), Option<Instant>),
    /// The adaptive batch-size cap, when configured.
    adaptive: Option<Adaptive>,
    /// The learned size limit and which errors mean "too large", when the
    /// layer has one.
    limit: Option<(SizeLimit, TooLargeFn)>,
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
            .field("retrying", &self.retries.len())
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
        isolation: Option<u32>,
    ) -> Self {
        debug_assert!(max_concurrent > 0);
        let control = &shared.control;
        let max_batch_size = control.max_batch_size.load(Ordering::Relaxed);
        let adaptive = control
            .adaptive
            .map(|config| Adaptive::seeded(config, max_batch_size, &control.adaptive_profile));
        let limit = shared.hooks.size_limit.as_ref().map(|(config, too_large)| {
            (
                SizeLimit::new(*config, max_batch_size, Instant::now()),
                too_large.clone(),
            )
        });
        let policy = Policy {
            max_batch_size,
            cap: adaptive.as_ref().map_or(usize::MAX, Adaptive::cap),
            max_wait: control.max_wait(),
            preferred: control.preferred.lock().clone(),
            max_cost,
            load: None,
        };
        let load = (control.wait_for == WaitFor::RecentLoad).then(LoadWindow::default);
        let mut worker = Self {
            shared,
            service,
            spare: Vec::with_capacity(64),
            queue: PendingQueue::new(),
            retries: Retries::new(),
            isolation,
            in_flight: (0..max_concurrent).map(|_| Box::pin(None)).collect(),
            running: 0,
            spare_senders: Vec::new(),
            spare_kept: Vec::new(),
            handles: Handles::new(),
            policy,
            timer: None,
            next_sweep: None,
            waits: Vec::new(),
            yielded: false,
            last_fanout: 0,
            load,
            gauges: ((0, 0), None),
            adaptive,
            limit,
            failed: false,
            finished: false,
        };
        // A profile may start the cap below `max_batch_size`.
        worker.publish_cap();
        worker
    }

    fn control(&self) -> &Control {
        &self.shared.control
    }

    fn free_slot(&self) -> usize {
        self.in_flight
            .iter()
            .position(|s| s.is_none())
            .expect("a slot is free while running < max_concurrent")
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
        if let Some(load) = &mut self.load {
            load.current = load.current.max(held(&self.queue, &self.shared.control));
        }
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
            }
            if let Some((limit, _)) = &mut self.limit {
                limit.set_max(self.policy.max_batch_size);
            }
            self.publish_cap();
        }
    }

    /// Applies the adaptive cap and the learned size limit to the next
    /// batches and publishes them.
    fn publish_cap(&mut self) {
        let mut cap = usize::MAX;
        let control = &self.shared.control;
        if let Some(adaptive) = &self.adaptive {
            cap = adaptive.cap();
            let chosen = adaptive.chosen();
            if control.batch_size_cap.swap(chosen, Ordering::Relaxed) != chosen {
                self.handles.batch_size_cap.set(chosen as f64);
            }
        }
        if let Some((limit, _)) = &self.limit {
            let limit = limit.limit();
            cap = cap.min(limit);
            if control.size_limit.swap(limit, Ordering::Relaxed) != limit {
                self.handles.size_limit.set(limit as f64);
            }
        }
        self.policy.cap = cap;
    }

    /// Learns from a finished batch what fits, when the layer has a size
    /// limit; returns whether the limit changed.
    fn learn_size(&mut self, done: &Done<Req, Resp>) -> bool {
        let Some((limit, too_large)) = &mut self.limit else {
            return false;
        };
        if let Outcome::Ok = done.outcome {
            limit.fitted(done.size);
            return false;
        }
        let Some(error) = &done.error else {
            return false;
        };
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(&**error);
        while let Some(e) = current {
            if too_large(e) {
                let before = limit.limit();
                limit.too_large(done.size, Instant::now());
                self.shared
                    .control
                    .stats
                    .too_large
                    .fetch_add(1, Ordering::Relaxed);
                self.handles.too_large.increment(1);
                return limit.limit() != before;
            }
            current = e.source();
        }
        false
    }

    /// Counts queued items that left without running; gives back their
    /// queue slots.
    fn count_removed(&self, removed: &Removed) {
        let gone = self.count_gone(removed);
        self.control().release_permits(gone);
    }

    /// Counts items that left without running (cancelled, or expired and
    /// answered [`DeadlineExceeded`](crate::DeadlineExceeded)). Returns how many.
    fn count_gone(&self, removed: &Removed) -> usize {
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
        (removed.cancelled + removed.expired) as usize
    }

    fn sweep(&mut self, now: Instant) {
        let mut removed = Removed::default();
        let earliest = self.queue.sweep(now, &mut removed);
        self.next_sweep = earliest.map(|e| e.max(now + SWEEP_GRANULARITY));
        self.count_removed(&removed);
        if !self.retries.is_empty() {
            let mut removed = Removed::default();
            let earliest = self.retries.sweep(now, &mut removed);
            self.count_removed_retries(&removed);
            self.watch_deadline(earliest.map(|e| e.max(now + SWEEP_GRANULARITY)));
        }
    }

    /// Makes the next sweep happen no later than `at`.
    fn watch_deadline(&mut self, at: Option<Instant>) {
        if let Some(at) = at {
            self.next_sweep = Some(self.next_sweep.map_or(at, |e| e.min(at)));
        }
    }

    /// Counts items of failed batches that left before running again. Their
    /// queue slots were given back when their batch went out.
    fn count_removed_retries(&self, removed: &Removed) {
        let gone = self.count_gone(removed);
        self.control()
            .stats
            .in_flight_items
            .fetch_sub(gone, Ordering::Relaxed);
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
        let mut batch = self.outgoing(target, 0, None);
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
            batch.push(item.req, item.deadline, item.tx);
        });
        if taken == 0 {
            self.spare_senders.push(batch.senders);
            return 0;
        }
        if taken == 1 {
            // A batch of one has nothing to isolate.
            batch.kept.clear();
        }
        self.shared.control.release_permits(taken);
        span.record("size", taken);
        self.record_dispatch(taken, true);
        if let Some(load) = &mut self.load {
            load.close(held(&self.queue, &self.shared.control));
        }
        self.start(slot, batch, span, now, cx);
        taken
    }

    /// Sends the next part of a failed batch again in free slot `slot`, once
    /// the batch service is ready (pending: not ready, nothing went out).
    /// Returns whether a part went out.
    fn dispatch_retry(&mut self, slot: usize, now: Instant, cx: &mut Context<'_>) -> Poll<bool> {
        let mut removed = Removed::default();
        let part = self.retries.next(now, &mut removed);
        self.count_removed_retries(&removed);
        let Some(part) = part else {
            return Poll::Ready(false);
        };
        match self.service.poll_ready(cx) {
            Poll::Pending => {
                self.retries.put_back(part);
                return Poll::Pending;
            }
            Poll::Ready(Err(err)) => {
                self.retries.put_back(part);
                self.fail_all(err.into());
                return Poll::Ready(false);
            }
            Poll::Ready(Ok(())) => {}
        }
        let cap = self.adaptive.as_ref().map(Adaptive::chosen);
        let limit = self.limit.as_ref().map(|(l, _)| l.limit());
        self.handles
            .refresh(&self.shared.control.telemetry, now, cap, limit);
        if part.starts_pass() {
            self.control()
                .stats
                .isolation_passes
                .fetch_add(1, Ordering::Relaxed);
            self.handles.isolation_passes.increment(1);
        }
        let (size, pass) = (part.items.len(), part.pass);
        let mut batch = self.outgoing(size, pass, Some(part.origin()));
        for item in part.items {
            batch.push(item.req, item.deadline, item.tx);
        }
        let span = tracing::info_span!(
            "convoy_batch",
            batcher = %self.shared.control.name,
            size,
            isolation_pass = pass
        );
        self.waits.clear();
        self.record_dispatch(size, false);
        self.start(slot, batch, span, now, cx);
        Poll::Ready(true)
    }

    /// Room for a batch of up to `size` requests run in pass `pass`; it
    /// keeps copies of them when it may be split if it fails.
    fn outgoing(
        &mut self,
        size: usize,
        pass: u32,
        origin: Option<Arc<AtomicU32>>,
    ) -> Outgoing<Req, Resp> {
        let copy = match (&self.shared.hooks.copy, self.isolation) {
            (Some(copy), Some(max)) if size > 1 && pass < max => Some(copy.clone()),
            _ => None,
        };
        let kept = match copy {
            Some(_) => self.spare_kept.pop().unwrap_or_default(),
            None => Vec::new(),
        };
        Outgoing {
            reqs: Vec::with_capacity(size),
            senders: self.spare_senders.pop().unwrap_or_default(),
            kept,
            copy,
            pass,
            origin,
        }
    }

    /// Calls the batch service with `batch`, puts the running batch in
    /// free slot `slot` and polls it once.
    fn start(
        &mut self,
        slot: usize,
        batch: Outgoing<Req, Resp>,
        span: tracing::Span,
        now: Instant,
        cx: &mut Context<'_>,
    ) {
        let Outgoing {
            reqs,
            senders,
            kept,
            pass,
            origin,
            ..
        } = batch;
        match std::panic::catch_unwind(AssertUnwindSafe(|| self.service.call(reqs))) {
            Ok(fut) => {
                let fut = AssertUnwindSafe(fut.instrument(span)).catch_unwind();
                self.in_flight[slot].set(Some(InFlight {
                    fut,
                    senders,
                    kept,
                    pass,
                    origin,
                    started: now,
                }));
                self.running += 1;
                self.poll_slot(slot, cx);
            }
            Err(panic) => {
                let err = BatchPanicked::from_payload(&*panic);
                let done = finish(
                    Failure::Panicked(err),
                    senders,
                    kept,
                    pass,
                    origin,
                    Duration::ZERO,
                );
                self.record_done(done);
            }
        }
        self.shared
            .control
            .stats
            .in_flight
            .store(self.running, Ordering::Relaxed);
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

    /// Records a batch that goes out; `fresh` when its items come from the
    /// queue (not from a failed batch, whose items are still in flight).
    fn record_dispatch(&mut self, size: usize, fresh: bool) {
        let stats = &self.shared.control.stats;
        stats.batches.fetch_add(1, Ordering::Relaxed);
        if fresh {
            stats.in_flight_items.fetch_add(size, Ordering::Relaxed);
        }
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

    fn record_done(&mut self, mut done: Done<Req, Resp>) {
        self.last_fanout = done.size;
        if let Some(load) = &mut self.load {
            load.finished = Some(Instant::now());
        }
        let stats = &self.shared.control.stats;
        stats
            .completed
            .fetch_add(done.answered as u64, Ordering::Relaxed);
        stats.in_flight.store(self.running, Ordering::Relaxed);
        stats
            .in_flight_items
            .fetch_sub(done.answered, Ordering::Relaxed);
        stats.recent.lock().record_service(done.size, done.took);
        let h = &self.handles;
        h.service.record(done.took.as_secs_f64());
        h.batches[done.outcome as usize].increment(1);
        if done.pass > 0 && done.size == 1 && !matches!(done.outcome, Outcome::Ok) {
            stats.isolated_failures.fetch_add(1, Ordering::Relaxed);
            h.isolated_failures.increment(1);
        }
        let mut changed = self.learn_size(&done);
        if let (Some(adaptive), Outcome::Ok) = (&mut self.adaptive, done.outcome) {
            adaptive.record(done.size, done.took);
            changed = true;
        }
        if changed {
            self.publish_cap();
        }
        if let Some(split) = done.split.take() {
            if self.failed {
                // Nothing is dispatched any more: the batch's error stands.
                self.answer_failed(split.items, &split.failure);
            } else {
                let earliest = self.retries.split(split.items, done.pass + 1, split.origin);
                self.watch_deadline(earliest);
            }
        }
        done.senders.clear();
        if self.spare_senders.len() < self.in_flight.len() {
            self.spare_senders.push(done.senders);
        }
        if done.kept.capacity() > 0 && self.spare_kept.len() < self.in_flight.len() {
            done.kept.clear();
            self.spare_kept.push(done.kept);
        }
    }

    /// Answers the items of a failed batch with its error, for good.
    fn answer_failed(&self, items: Vec<Retry<Req, Resp>>, failure: &Failure) {
        let n = items.len();
        for item in items {
            let _ = item.tx.send(Err(failure.error()));
        }
        let stats = &self.control().stats;
        stats.completed.fetch_add(n as u64, Ordering::Relaxed);
        stats.in_flight_items.fetch_sub(n, Ordering::Relaxed);
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
        // Parts of failed batches hold no queue slots.
        let mut retried = 0;
        for tx in self.retries.drain() {
            retried += 1;
            let _ = tx.send(Err(BatchFailed::new(source.clone()).into()));
        }
        self.control()
            .stats
            .in_flight_items
            .fetch_sub(retried, Ordering::Relaxed);
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
            while !this.failed
                && this.running < this.in_flight.len()
                && !(this.queue.is_empty() && this.retries.is_empty())
            {
                let t = *now.get_or_insert_with(Instant::now);
                if !this.retries.is_empty() {
                    // Callers of failed batches have waited longest: their
                    // parts go first.
                    let slot = this.free_slot();
                    match this.dispatch_retry(slot, t, cx) {
                        Poll::Pending => break,
                        Poll::Ready(sent) => {
                            dispatched |= sent;
                            continue;
                        }
                    }
                }
                if let Some((limit, _)) = &mut this.limit {
                    if limit.poll(t) {
                        this.publish_cap();
                    }
                }
                this.policy.load = this.load.as_ref().map(|w| Load {
                    now: held(&this.queue, &this.shared.control),
                    peak: w.peak(),
                    since: w.finished,
                });
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
                let limit = this.limit.as_ref().map(|(l, _)| l.limit());
                this.handles
                    .refresh(&this.shared.control.telemetry, t, cap, limit);
                let slot = this.free_slot();
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

            if (closing || this.failed)
                && this.queue.is_empty()
                && this.retries.is_empty()
                && this.running == 0
            {
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

/// Callers a batcher holds: queued, or in running batches (retried parts
/// included).
fn held<Req, Resp>(queue: &PendingQueue<Req, Resp>, control: &Control) -> usize {
    queue.len() + control.stats.in_flight_items.load(Ordering::Relaxed)
}

/// Batches whose peak load a [`WaitFor::RecentLoad`] batch waits for.
const LOAD_WINDOWS: usize = 8;

/// The most callers held at once since each of the last
/// [`LOAD_WINDOWS`] batches went out. Old peaks roll off one batch at a
/// time, so after load falls a batch waits (at most `max_wait`) for callers
/// that are gone for nine batches at most: eight windows, and the one that
/// opened while the last of them still ran.
#[derive(Debug, Default)]
struct LoadWindow {
    /// Peaks of the last windows, oldest overwritten first.
    peaks: [usize; LOAD_WINDOWS],
    next: usize,
    /// The peak since the latest batch went out.
    current: usize,
    /// When the latest batch finished: the callers it answered are
    /// expected back from then.
    finished: Option<Instant>,
}

impl LoadWindow {
    fn peak(&self) -> usize {
        self.peaks.iter().copied().fold(self.current, usize::max)
    }

    /// A batch went out: the current window ends and the next starts at
    /// `held`, the callers held now.
    fn close(&mut self, held: usize) {
        self.peaks[self.next] = self.current;
        self.next = (self.next + 1) % LOAD_WINDOWS;
        self.current = held;
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
        let n = items.len() + self.queue.len() + self.retries.len();
        if n > 0 && !self.finished {
            control
                .stats
                .reject_n(Rejection::Closed, n as u64, &control.telemetry);
        }
        drop(items);
        self.queue.drain_all().for_each(drop);
        self.retries.drain().for_each(drop);
        control.stats.queued.store(0, Ordering::Relaxed);
    }
}

/// Room for one running batch, pinned once and reused.
type Slot<F, Req, Resp> = Pin<Box<Option<InFlight<F, Req, Resp>>>>;

/// A batch about to go to the batch service.
struct Outgoing<Req, Resp> {
    reqs: Vec<Req>,
    senders: Vec<Sender<Resp>>,
    /// Copies of `reqs` when the batch may be split if it fails; empty
    /// otherwise.
    kept: Vec<Kept<Req>>,
    /// Makes those copies.
    copy: Option<RequestFn<Req, Req>>,
    /// 0 for a batch from the queue; the isolation pass for a part of a
    /// failed batch.
    pass: u32,
    /// For a part of a failed batch: the deepest pass started for it.
    origin: Option<Arc<AtomicU32>>,
}

impl<Req, Resp> Outgoing<Req, Resp> {
    fn push(&mut self, req: Req, deadline: Option<Instant>, tx: Sender<Resp>) {
        if let Some(copy) = &self.copy {
            self.kept.push(Kept {
                req: copy(&req),
                deadline,
            });
        }
        self.reqs.push(req);
        self.senders.push(tx);
    }
}

/// Why a whole batch failed.
#[derive(Debug)]
enum Failure {
    Failed(Arc<dyn std::error::Error + Send + Sync>),
    Panicked(BatchPanicked),
}

impl Failure {
    /// The error each caller of the batch gets.
    fn error(&self) -> BoxError {
        match self {
            Failure::Failed(source) => BatchFailed::new(source.clone()).into(),
            Failure::Panicked(panic) => panic.clone().into(),
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Failed(_) => Outcome::Failed,
            Failure::Panicked(_) => Outcome::Panicked,
        }
    }
}

/// The items of a failed batch, to run again in halves.
struct Split<Req, Resp> {
    items: Vec<Retry<Req, Resp>>,
    origin: Option<Arc<AtomicU32>>,
    failure: Failure,
}

/// Outcome of one finished batch, for the statistics.
struct Done<Req, Resp> {
    size: usize,
    took: Duration,
    outcome: Outcome,
    /// Callers answered: every one, unless the batch is split.
    answered: usize,
    pass: u32,
    split: Option<Split<Req, Resp>>,
    /// The emptied caller list, for reuse.
    senders: Vec<Sender<Resp>>,
    /// The emptied request copies, for reuse.
    kept: Vec<Kept<Req>>,
    /// The batch service's error, when it failed the batch.
    error: Option<Arc<dyn std::error::Error + Send + Sync>>,
}

/// A batch failed as a whole: hands its items back to be split when their
/// copies were kept, or answers every caller with the failure.
fn finish<Req, Resp>(
    failure: Failure,
    mut senders: Vec<Sender<Resp>>,
    mut kept: Vec<Kept<Req>>,
    pass: u32,
    origin: Option<Arc<AtomicU32>>,
    took: Duration,
) -> Done<Req, Resp> {
    let size = senders.len();
    let outcome = failure.outcome();
    let error = match &failure {
        Failure::Failed(e) => Some(e.clone()),
        Failure::Panicked(_) => None,
    };
    let split = if size > 1 && kept.len() == size {
        let items = senders
            .drain(..)
            .zip(kept.drain(..))
            .map(|(tx, k)| Retry {
                req: k.req,
                deadline: k.deadline,
                tx,
            })
            .collect();
        Some(Split {
            items,
            origin,
            failure,
        })
    } else {
        for tx in senders.drain(..) {
            let _ = tx.send(Err(failure.error()));
        }
        kept.clear();
        None
    };
    Done {
        size,
        took,
        outcome,
        answered: if split.is_some() { 0 } else { size },
        pass,
        split,
        senders,
        kept,
        error,
    }
}

pin_project! {
    /// A running batch: the batch service's future and its callers.
    struct InFlight<F, Req, Resp> {
        #[pin]
        fut: CatchUnwind<AssertUnwindSafe<Instrumented<F>>>,
        senders: Vec<Sender<Resp>>,
        kept: Vec<Kept<Req>>,
        pass: u32,
        origin: Option<Arc<AtomicU32>>,
        started: Instant,
    }
}

impl<F, R, E, Req, Resp> Future for InFlight<F, Req, Resp>
where
    F: Future<Output = Result<R, E>>,
    R: IntoItemResults<Resp>,
    E: Into<BoxError>,
{
    type Output = Done<Req, Resp>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Done<Req, Resp>> {
        let this = self.project();
        let result = std::task::ready!(this.fut.poll(cx));
        let took = this.started.elapsed();
        let mut senders = std::mem::take(this.senders);
        let mut kept = std::mem::take(this.kept);
        let failure = match result {
            Ok(Ok(response)) => {
                let results = response.into_item_results();
                if results.len() == senders.len() {
                    let size = senders.len();
                    // Per-item errors are answers: they go to their own
                    // callers and are never retried.
                    for (tx, result) in senders.drain(..).zip(results) {
                        let _ = tx.send(result);
                    }
                    kept.clear();
                    return Poll::Ready(Done {
                        size,
                        took,
                        outcome: Outcome::Ok,
                        answered: size,
                        pass: *this.pass,
                        split: None,
                        senders,
                        kept,
                        error: None,
                    });
                }
                Failure::Failed(Arc::new(LengthMismatch {
                    expected: senders.len(),
                    actual: results.len(),
                }))
            }
            Ok(Err(err)) => Failure::Failed(Arc::from(err.into())),
            Err(panic) => Failure::Panicked(BatchPanicked::from_payload(&*panic)),
        };
        Poll::Ready(finish(
            failure,
            senders,
            kept,
            *this.pass,
            this.origin.take(),
            took,
        ))
    }
}
