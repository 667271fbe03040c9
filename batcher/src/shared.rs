//! State shared by the request handles, the worker and the control handles.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::task::AtomicWaker;
use parking_lot::Mutex;
use tokio::sync::{oneshot, Semaphore};
use tokio::time::Instant;
use tower::BoxError;
use tracing::Span;

use crate::adaptive::AdaptiveConfig;
use crate::config::{BatchConfig, WaitFor};
use crate::error::Closed;
use crate::future::ResponseFuture;
use crate::limit::SizeLimitConfig;
use crate::stats::{Rejection, StatsState};
use crate::telemetry::Telemetry;
use crate::Priority;

pub(crate) type Sender<Resp> = oneshot::Sender<Result<Resp, BoxError>>;
pub(crate) type Receiver<Resp> = oneshot::Receiver<Result<Resp, BoxError>>;

/// One admitted request waiting for a batch.
pub(crate) struct Item<Req, Resp> {
    pub(crate) req: Req,
    pub(crate) tx: Sender<Resp>,
    pub(crate) enqueued: Instant,
    pub(crate) deadline: Option<Instant>,
    pub(crate) key: u64,
    pub(crate) cost: u64,
    pub(crate) priority: Priority,
    pub(crate) span: Span,
}

/// A function of the request, set on the layer.
pub(crate) type RequestFn<Req, T> = Arc<dyn Fn(&Req) -> T + Send + Sync>;

/// Whether an error of the batch service means the batch was too large.
pub(crate) type TooLargeFn = Arc<dyn Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync>;

/// Per-request functions set on the layer.
pub(crate) struct Hooks<Req> {
    pub(crate) key: Option<RequestFn<Req, u64>>,
    pub(crate) cost: Option<RequestFn<Req, u64>>,
    pub(crate) priority: Option<RequestFn<Req, Priority>>,
    pub(crate) deadline: Option<RequestFn<Req, Option<Instant>>>,
    /// Copies a request so that a failed batch can be run again in parts.
    pub(crate) copy: Option<RequestFn<Req, Req>>,
    /// The learned size limit's settings and which errors mean "too large".
    pub(crate) size_limit: Option<(SizeLimitConfig, TooLargeFn)>,
}

impl<Req> Clone for Hooks<Req> {
    fn clone(&self) -> Self {
        Self {
            key: self.key.clone(),
            cost: self.cost.clone(),
            priority: self.priority.clone(),
            deadline: self.deadline.clone(),
            copy: self.copy.clone(),
            size_limit: self.size_limit.clone(),
        }
    }
}

impl<Req> Default for Hooks<Req> {
    fn default() -> Self {
        Self {
            key: None,
            cost: None,
            priority: None,
            deadline: None,
            copy: None,
            size_limit: None,
        }
    }
}

impl<Req> fmt::Debug for Hooks<Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Hooks")
            .field("key_fn", &self.key.is_some())
            .field("cost_fn", &self.cost.is_some())
            .field("priority_fn", &self.priority.is_some())
            .field("deadline_fn", &self.deadline.is_some())
            .field("isolate_failures", &self.copy.is_some())
            .field("size_limit", &self.size_limit.as_ref().map(|(c, _)| c))
            .finish()
    }
}

/// The part of the shared state that does not depend on the request type:
/// admission, live settings, statistics. Control handles see only this.
pub(crate) struct Control {
    pub(crate) name: Arc<str>,
    /// Free queue slots. Permits are taken in `poll_ready` (or `call` when
    /// rejecting) and forgotten; the worker gives them back in bulk when
    /// items leave the queue.
    pub(crate) semaphore: Semaphore,
    /// Permits still to be removed after `queue_capacity` shrank below the
    /// number of slots in use.
    pub(crate) permit_debt: AtomicUsize,
    pub(crate) queue_capacity: AtomicUsize,
    pub(crate) max_batch_size: AtomicUsize,
    /// The adaptive batch-size cap the worker forms batches under, when on.
    pub(crate) batch_size_cap: AtomicUsize,
    pub(crate) adaptive: Option<AdaptiveConfig>,
    /// The learned size limit (`usize::MAX` when there is none).
    pub(crate) size_limit: AtomicUsize,
    /// Where the adaptive cap starts: service times measured before serving.
    pub(crate) adaptive_profile: Vec<(usize, Duration)>,
    pub(crate) max_wait_nanos: AtomicU64,
    pub(crate) wait_for: WaitFor,
    pub(crate) preferred: Mutex<Vec<usize>>,
    pub(crate) settings_changed: AtomicBool,
    /// Serialises the setters.
    pub(crate) settings_lock: Mutex<()>,
    pub(crate) closing: AtomicBool,
    /// Live `Batch` request handles; at zero the worker drains and ends.
    pub(crate) senders: AtomicUsize,
    pub(crate) worker: AtomicWaker,
    pub(crate) stats: StatsState,
    pub(crate) telemetry: Telemetry,
}

impl Control {
    pub(crate) fn new(config: &BatchConfig) -> Self {
        let name: Arc<str> = Arc::from(config.name.as_str());
        Self {
            semaphore: Semaphore::new(config.queue_capacity),
            permit_debt: AtomicUsize::new(0),
            queue_capacity: AtomicUsize::new(config.queue_capacity),
            max_batch_size: AtomicUsize::new(config.max_batch_size),
            // The worker, built beside this, publishes where a profile
            // starts the adaptive cap.
            batch_size_cap: AtomicUsize::new(config.max_batch_size),
            adaptive: config.adaptive,
            size_limit: AtomicUsize::new(usize::MAX),
            adaptive_profile: config.adaptive_profile.clone(),
            max_wait_nanos: AtomicU64::new(nanos(config.max_wait)),
            wait_for: config.wait_for,
            preferred: Mutex::new(config.preferred_batch_sizes.clone()),
            settings_changed: AtomicBool::new(false),
            settings_lock: Mutex::new(()),
            closing: AtomicBool::new(false),
            senders: AtomicUsize::new(1),
            worker: AtomicWaker::new(),
            stats: StatsState::new(),
            telemetry: Telemetry::new(&name),
            name,
        }
    }

    /// Returns `n` queue slots, paying off any capacity reduction first.
    pub(crate) fn release_permits(&self, mut n: usize) {
        if n == 0 {
            return;
        }
        if self.permit_debt.load(Ordering::Relaxed) > 0 {
            let _ = self
                .permit_debt
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |debt| {
                    let paid = debt.min(n);
                    if paid == 0 {
                        None
                    } else {
                        Some(debt - paid)
                    }
                })
                .map(|debt| n -= debt.min(n));
        }
        if n > 0 {
            self.semaphore.add_permits(n);
        }
    }

    /// Stops admission; the worker drains what is queued and then ends.
    pub(crate) fn close(&self) {
        self.closing.store(true, Ordering::Release);
        self.semaphore.close();
        self.worker.wake();
    }

    pub(crate) fn max_wait(&self) -> Duration {
        Duration::from_nanos(self.max_wait_nanos.load(Ordering::Relaxed))
    }

    /// The largest batch formed now: `max_batch_size`, or the adaptive cap
    /// or the learned size limit below it.
    pub(crate) fn batch_size_cap(&self) -> usize {
        let max = self.max_batch_size.load(Ordering::Relaxed);
        let cap = if self.adaptive.is_some() {
            self.batch_size_cap.load(Ordering::Relaxed).clamp(1, max)
        } else {
            max
        };
        cap.min(self.size_limit.load(Ordering::Relaxed)).max(1)
    }

    /// The learned size limit, when the layer has one.
    pub(crate) fn size_limit(&self) -> Option<usize> {
        let limit = self.size_limit.load(Ordering::Relaxed);
        (limit != usize::MAX).then(|| limit.min(self.max_batch_size.load(Ordering::Relaxed)))
    }
}

pub(crate) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl fmt::Debug for Control {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Control")
            .field("name", &self.name)
            .field("queue_capacity", &self.queue_capacity)
            .field("max_batch_size", &self.max_batch_size)
            .field("closing", &self.closing)
            .finish_non_exhaustive()
    }
}

/// Items handed from callers to the worker. The worker swaps the whole
/// vector out under the lock, so callers and worker touch it briefly.
pub(crate) struct Inbound<Req, Resp> {
    pub(crate) items: Vec<Item<Req, Resp>>,
    /// Set by the worker once it no longer takes items.
    pub(crate) closed: bool,
}

pub(crate) struct Shared<Req, Resp> {
    pub(crate) control: Control,
    pub(crate) inbound: Mutex<Inbound<Req, Resp>>,
    pub(crate) hooks: Hooks<Req>,
    pub(crate) queue_timeout: Option<Duration>,
}

impl<Req, Resp> fmt::Debug for Shared<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("control", &self.control)
            .field("hooks", &self.hooks)
            .finish_non_exhaustive()
    }
}

impl<Req, Resp> Shared<Req, Resp> {
    pub(crate) fn new(config: &BatchConfig, hooks: Hooks<Req>) -> Self {
        Self {
            control: Control::new(config),
            inbound: Mutex::new(Inbound {
                items: Vec::with_capacity(64),
                closed: false,
            }),
            hooks,
            queue_timeout: config.queue_timeout,
        }
    }

    /// Builds the queue item for `req`, running the layer's functions of
    /// the request (which may panic: no queue slot is consumed yet).
    pub(crate) fn prepare(&self, req: Req) -> (Item<Req, Resp>, Receiver<Resp>) {
        let hooks = &self.hooks;
        let key = hooks.key.as_ref().map_or(0, |f| f(&req));
        let cost = hooks.cost.as_ref().map_or(1, |f| f(&req));
        let priority = hooks
            .priority
            .as_ref()
            .map_or(Priority::Normal, |f| f(&req));
        let enqueued = Instant::now();
        let own = hooks.deadline.as_ref().and_then(|f| f(&req));
        // A timeout beyond the end of time is no timeout.
        let timeout = self.queue_timeout.and_then(|t| enqueued.checked_add(t));
        let deadline = match (own, timeout) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        let (tx, rx) = oneshot::channel();
        let item = Item {
            req,
            tx,
            enqueued,
            deadline,
            key,
            cost,
            priority,
            span: Span::current(),
        };
        (item, rx)
    }

    /// Queues an admitted item (its queue slot is already taken).
    pub(crate) fn push(&self, item: Item<Req, Resp>, rx: Receiver<Resp>) -> ResponseFuture<Resp> {
        let mut inbound = self.inbound.lock();
        if inbound.closed {
            drop(inbound);
            self.control.release_permits(1);
            self.control
                .stats
                .reject(Rejection::Closed, &self.control.telemetry);
            return ResponseFuture::failed(Closed::new().into());
        }
        let was_empty = inbound.items.is_empty();
        inbound.items.push(item);
        drop(inbound);
        // The worker takes everything at once, so only the first item after
        // a take has to wake it.
        if was_empty {
            self.control.worker.wake();
        }
        ResponseFuture::waiting(rx)
    }
}

/// What a [`BatchHandle`](crate::BatchHandle) needs from the typed state.
pub(crate) trait ControlRef: Send + Sync + fmt::Debug {
    fn control(&self) -> &Control;
    fn queued(&self) -> usize;
}

impl<Req: Send, Resp: Send> ControlRef for Shared<Req, Resp> {
    fn control(&self) -> &Control {
        &self.control
    }

    fn queued(&self) -> usize {
        self.inbound.lock().items.len()
    }
}
