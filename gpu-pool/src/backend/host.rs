use std::collections::{HashMap, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::{Backend, BackendKind, EventId, MemoryInfo, StreamId, StreamPriorityRange};
use crate::error::BackendError;

/// Settings of a [`HostBackend`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HostConfig {
    /// Bytes the simulated device holds (chunks beyond it fail as out of memory).
    pub capacity: u64,
    /// Simulated time each launched operation keeps its stream busy
    /// (measured on tokio's clock, so paused-time tests control it).
    pub op_latency: Duration,
    /// Simulated stream priority range.
    pub priorities: StreamPriorityRange,
}

impl Default for HostConfig {
    fn default() -> Self {
        Self {
            capacity: 1 << 30,
            op_latency: Duration::ZERO,
            priorities: StreamPriorityRange {
                least: 0,
                greatest: -5,
            },
        }
    }
}

impl HostConfig {
    /// A simulated device of `bytes`.
    pub fn with_capacity(bytes: u64) -> Self {
        Self {
            capacity: bytes,
            ..Self::default()
        }
    }

    /// Sets [`HostConfig::op_latency`].
    pub fn op_latency(mut self, latency: Duration) -> Self {
        self.op_latency = latency;
        self
    }
}

/// 256-byte aligned unit, so chunk addresses are aligned without `unsafe`.
#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Unit([u8; 256]);

type Op = Box<dyn FnOnce() + Send>;

/// Streams one host backend can have alive at once.
const MAX_STREAMS: usize = 4096;

struct HostStream {
    priority: i32,
    /// Ops launched so far (the sequence number of the last one).
    submitted: AtomicU64,
    /// Ops completed so far.
    done: AtomicU64,
    state: Mutex<StreamState>,
    /// Signalled when a stalled stream is released.
    released: Condvar,
    /// Synchronize calls blocked on this stream now.
    blocked_syncs: AtomicU32,
}

struct StreamState {
    held: bool,
    /// Held with [`HostBackend::stall`]: synchronize blocks until release.
    stalled: bool,
    queue: VecDeque<Op>,
    busy_until: Option<Instant>,
}

/// An event keeps its stream alive, so it stays valid after the stream is
/// released (as CUDA events do).
#[derive(Clone)]
struct HostEvent {
    stream: Arc<HostStream>,
    seq: u64,
    ready_at: Option<Instant>,
}

#[derive(Default)]
struct StreamTable {
    slots: Vec<Option<Arc<HostStream>>>,
    /// Released ids, handed out again by `create_stream`.
    free: Vec<u32>,
    live: usize,
}

struct HostInner {
    cfg: HostConfig,
    used: AtomicU64,
    fail_allocs: AtomicU32,
    /// Stream creations left before an injected failure (0: none armed).
    fail_stream_in: AtomicU32,
    chunks: Mutex<HashMap<u64, Box<[Unit]>>>,
    streams: RwLock<StreamTable>,
    events: Mutex<HashMap<u64, HostEvent>>,
    next_event: AtomicU64,
    /// Signalled when a synchronize starts blocking on a stalled stream.
    sync_blocked: Condvar,
    sync_blocked_lock: Mutex<()>,
}

/// A backend on host memory: chunks are aligned heap slices whose address
/// is the "device pointer", streams are ordered executors of closures, and
/// events are completion marks on them.
///
/// Test hooks: [`HostBackend::fail_next_chunk_allocs`] injects
/// out-of-memory, [`HostBackend::fail_stream_creation_after`] a failing
/// stream creation, [`HostConfig::op_latency`] makes launched work take
/// simulated time, [`HostBackend::hold`]/[`HostBackend::release`] stop a
/// stream so its events stay incomplete, and [`HostBackend::stall`] also
/// makes synchronizing it block like a busy device. Clones share the same
/// device.
#[derive(Clone)]
pub struct HostBackend {
    inner: Arc<HostInner>,
}

impl fmt::Debug for HostBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostBackend")
            .field("capacity", &self.inner.cfg.capacity)
            .field("used", &self.inner.used.load(Ordering::Relaxed))
            .field("streams", &self.inner.streams.read().live)
            .finish()
    }
}

impl Default for HostBackend {
    fn default() -> Self {
        Self::new(HostConfig::default())
    }
}

impl HostBackend {
    /// A simulated device.
    pub fn new(cfg: HostConfig) -> Self {
        Self {
            inner: Arc::new(HostInner {
                cfg,
                used: AtomicU64::new(0),
                fail_allocs: AtomicU32::new(0),
                fail_stream_in: AtomicU32::new(0),
                chunks: Mutex::new(HashMap::new()),
                streams: RwLock::new(StreamTable::default()),
                events: Mutex::new(HashMap::new()),
                next_event: AtomicU64::new(0),
                sync_blocked: Condvar::new(),
                sync_blocked_lock: Mutex::new(()),
            }),
        }
    }

    /// The next `n` chunk allocations fail with out-of-memory.
    pub fn fail_next_chunk_allocs(&self, n: u32) {
        self.inner.fail_allocs.store(n, Ordering::SeqCst);
    }

    /// The next `ok` stream creations succeed and the one after fails
    /// (once).
    pub fn fail_stream_creation_after(&self, ok: u32) {
        self.inner
            .fail_stream_in
            .store(ok.saturating_add(1), Ordering::SeqCst);
    }

    /// Bytes held in chunks now.
    pub fn used_bytes(&self) -> u64 {
        self.inner.used.load(Ordering::SeqCst)
    }

    /// Streams created and not yet released.
    pub fn live_streams(&self) -> usize {
        self.inner.streams.read().live
    }

    fn stream(&self, s: StreamId) -> Result<Arc<HostStream>, BackendError> {
        self.inner
            .streams
            .read()
            .slots
            .get(s.0 as usize)
            .and_then(Option::clone)
            .ok_or_else(|| BackendError::new(format!("unknown {s}")))
    }

    /// Runs `op` on `stream` in order: at once if the stream is not held
    /// and nothing is queued, else after the queued ops on
    /// [`HostBackend::release`]. `op` runs with the stream locked: it must
    /// not call back into this backend for the same stream.
    pub fn launch(
        &self,
        stream: StreamId,
        op: impl FnOnce() + Send + 'static,
    ) -> Result<(), BackendError> {
        let s = self.stream(stream)?;
        let mut st = s.state.lock();
        s.submitted.fetch_add(1, Ordering::SeqCst);
        if !self.inner.cfg.op_latency.is_zero() {
            let now = Instant::now();
            let from = st.busy_until.map_or(now, |b| b.max(now));
            st.busy_until = Some(from + self.inner.cfg.op_latency);
        }
        if st.held || !st.queue.is_empty() {
            st.queue.push_back(Box::new(op));
        } else {
            op();
            s.done.fetch_add(1, Ordering::SeqCst);
        }
        Ok(())
    }

    /// Stops `stream`: ops launched from now on wait, and events recorded
    /// after them stay incomplete until [`HostBackend::release`].
    /// Synchronizing a held stream fails at once (see [`HostBackend::stall`]
    /// for one that blocks).
    pub fn hold(&self, stream: StreamId) -> Result<(), BackendError> {
        self.stream(stream)?.state.lock().held = true;
        Ok(())
    }

    /// Like [`HostBackend::hold`], and [`Backend::synchronize`] on the
    /// stream blocks until [`HostBackend::release`], as on a device whose
    /// stream runs a long kernel.
    pub fn stall(&self, stream: StreamId) -> Result<(), BackendError> {
        let s = self.stream(stream)?;
        let mut st = s.state.lock();
        st.held = true;
        st.stalled = true;
        Ok(())
    }

    /// Waits up to `timeout` (wall clock) until a synchronize is blocked on
    /// the stalled `stream`; true if one is.
    pub fn wait_for_blocked_sync(&self, stream: StreamId, timeout: std::time::Duration) -> bool {
        let Ok(s) = self.stream(stream) else {
            return false;
        };
        let mut guard = self.inner.sync_blocked_lock.lock();
        while s.blocked_syncs.load(Ordering::SeqCst) == 0 {
            if self
                .inner
                .sync_blocked
                .wait_for(&mut guard, timeout)
                .timed_out()
            {
                return s.blocked_syncs.load(Ordering::SeqCst) > 0;
            }
        }
        true
    }

    /// Runs the ops queued on a held stream, in order, and un-holds it.
    pub fn release(&self, stream: StreamId) -> Result<(), BackendError> {
        let s = self.stream(stream)?;
        let mut st = s.state.lock();
        st.held = false;
        st.stalled = false;
        while let Some(op) = st.queue.pop_front() {
            op();
            s.done.fetch_add(1, Ordering::SeqCst);
        }
        s.released.notify_all();
        Ok(())
    }

    /// Priority the stream was created with.
    pub fn stream_priority(&self, stream: StreamId) -> Option<i32> {
        self.stream(stream).ok().map(|s| s.priority)
    }
}

impl Backend for HostBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Host
    }

    fn device_name(&self) -> String {
        format!("host ({} bytes simulated)", self.inner.cfg.capacity)
    }

    fn memory_info(&self) -> Result<MemoryInfo, BackendError> {
        let used = self.used_bytes();
        Ok(MemoryInfo {
            free: self.inner.cfg.capacity.saturating_sub(used),
            total: self.inner.cfg.capacity,
        })
    }

    fn priority_range(&self) -> StreamPriorityRange {
        self.inner.cfg.priorities
    }

    fn alloc_chunk(&self, bytes: u64) -> Result<u64, BackendError> {
        let inj = self
            .inner
            .fail_allocs
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if inj.is_ok() {
            return Err(BackendError::out_of_memory("injected out-of-memory"));
        }
        let cap = self.inner.cfg.capacity;
        let reserved = self
            .inner
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |u| {
                u.checked_add(bytes).filter(|&n| n <= cap)
            });
        if reserved.is_err() {
            return Err(BackendError::out_of_memory(format!(
                "{bytes} bytes do not fit in the {cap} byte host device"
            )));
        }
        let units = usize::try_from(bytes.div_ceil(256).max(1)).unwrap_or(usize::MAX);
        let mut v: Vec<Unit> = Vec::new();
        if v.try_reserve_exact(units).is_err() {
            self.inner.used.fetch_sub(bytes, Ordering::SeqCst);
            return Err(BackendError::out_of_memory("host allocation failed"));
        }
        v.resize(units, Unit([0; 256]));
        let mem = v.into_boxed_slice();
        let addr = mem.as_ptr() as usize as u64;
        self.inner.chunks.lock().insert(addr, mem);
        Ok(addr)
    }

    fn free_chunk(&self, addr: u64, bytes: u64) {
        if self.inner.chunks.lock().remove(&addr).is_some() {
            self.inner.used.fetch_sub(bytes, Ordering::SeqCst);
        } else {
            tracing::warn!(addr, "host backend: free of an unknown chunk ignored");
        }
    }

    fn create_stream(&self, priority: i32) -> Result<StreamId, BackendError> {
        let injected =
            self.inner
                .fail_stream_in
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
        if injected == Ok(1) {
            return Err(BackendError::new("injected stream creation failure"));
        }
        let mut table = self.inner.streams.write();
        if table.live >= MAX_STREAMS {
            return Err(BackendError::new(format!(
                "at most {MAX_STREAMS} live host streams"
            )));
        }
        let stream = Arc::new(HostStream {
            priority,
            submitted: AtomicU64::new(0),
            done: AtomicU64::new(0),
            state: Mutex::new(StreamState {
                held: false,
                stalled: false,
                queue: VecDeque::new(),
                busy_until: None,
            }),
            released: Condvar::new(),
            blocked_syncs: AtomicU32::new(0),
        });
        let id = match table.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(table.slots.len())
                    .map_err(|_| BackendError::new("stream ids exhausted"))?;
                table.slots.push(None);
                id
            }
        };
        table.slots[id as usize] = Some(stream);
        table.live += 1;
        Ok(StreamId(id))
    }

    fn release_stream(&self, stream: StreamId) {
        let mut table = self.inner.streams.write();
        match table
            .slots
            .get_mut(stream.0 as usize)
            .and_then(Option::take)
        {
            Some(_) => {
                table.free.push(stream.0);
                table.live -= 1;
            }
            None => tracing::warn!(%stream, "host backend: release of an unknown stream ignored"),
        }
    }

    fn record_event(&self, stream: StreamId) -> Result<Option<EventId>, BackendError> {
        let latency = !self.inner.cfg.op_latency.is_zero();
        let s = self.stream(stream)?;
        if !latency && s.done.load(Ordering::SeqCst) >= s.submitted.load(Ordering::SeqCst) {
            // Fast path (every free): no work outstanding, no event needed.
            return Ok(None);
        }
        let seq = s.submitted.load(Ordering::SeqCst);
        let ready_at = if latency {
            let busy = s.state.lock().busy_until;
            busy.filter(|b| *b > Instant::now())
        } else {
            None
        };
        if ready_at.is_none() && s.done.load(Ordering::SeqCst) >= seq {
            return Ok(None);
        }
        let id = self.inner.next_event.fetch_add(1, Ordering::Relaxed);
        self.inner.events.lock().insert(
            id,
            HostEvent {
                stream: s,
                seq,
                ready_at,
            },
        );
        Ok(Some(EventId(id)))
    }

    fn event_complete(&self, event: EventId) -> bool {
        let Some(e) = self.inner.events.lock().get(&event.0).cloned() else {
            return true;
        };
        e.stream.done.load(Ordering::SeqCst) >= e.seq
            && e.ready_at.is_none_or(|t| Instant::now() >= t)
    }

    fn release_event(&self, event: EventId) {
        self.inner.events.lock().remove(&event.0);
    }

    fn synchronize(&self, stream: StreamId) -> Result<(), BackendError> {
        let s = self.stream(stream)?;
        let mut st = s.state.lock();
        if st.stalled {
            s.blocked_syncs.fetch_add(1, Ordering::SeqCst);
            {
                let _g = self.inner.sync_blocked_lock.lock();
                self.inner.sync_blocked.notify_all();
            }
            while st.stalled {
                s.released.wait(&mut st);
            }
            s.blocked_syncs.fetch_sub(1, Ordering::SeqCst);
        }
        if st.held {
            return Err(BackendError::new(format!(
                "{stream} is held; synchronizing would never return"
            )));
        }
        // Simulated latency has no thread to wait on: completing it is the
        // host's equivalent of blocking until the stream drains.
        st.busy_until = None;
        drop(st);
        let mut events = self.inner.events.lock();
        for e in events.values_mut() {
            if Arc::ptr_eq(&e.stream, &s) {
                e.ready_at = None;
            }
        }
        Ok(())
    }
}
