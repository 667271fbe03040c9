use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use tower::BoxError;

use super::account::TenantInner;
use super::buf::PoolBuf;
use super::config::{Share, TenantConfig};
use super::device::GpuPool;
use crate::alloc::{Miss, StreamId};
use crate::error::{BackendError, DeviceOutOfMemory, FootprintExceeded, QuotaExceeded};
use crate::gate::{Acquire, SlotPermit, SlotUsage};
use crate::priority::Priority;

/// The allocator lane of buffers used on several streams: no stream's own
/// lane, so they only get ranges free for every stream (never a backend
/// stream id).
const EVERY_STREAM: StreamId = StreamId(u32::MAX);

/// A tenant of a [`GpuPool`]: a memory quota, streams and a compute weight.
///
/// Cloning is cheap. The tenant's reservation returns to the pool when the
/// last clone and the last of its buffers are dropped.
#[derive(Clone)]
pub struct Tenant {
    pub(crate) inner: Arc<TenantInner>,
}

impl GpuPool {
    /// Admits a tenant: validates the share, refuses duplicates and
    /// over-commit (quotas plus external footprints past the budget, with
    /// the tenants involved named), creates its streams and registers it
    /// with the compute gate. The reservation is returned when the last
    /// handle and buffer of the tenant are dropped.
    pub fn tenant(&self, name: impl Into<String>, share: Share) -> Result<Tenant, BoxError> {
        let mut v = self.admit_all([TenantConfig::new(name, share)])?;
        Ok(v.pop().expect("one tenant admitted"))
    }

    /// Admits several tenants at once: all or none. If a stream cannot be
    /// created, the streams made so far are released and nothing is
    /// admitted.
    pub fn admit_all(
        &self,
        tenants: impl IntoIterator<Item = TenantConfig>,
    ) -> Result<Vec<Tenant>, BoxError> {
        let tenants: Vec<TenantConfig> = tenants.into_iter().collect();
        let admitted = self.admit(&tenants)?;
        Ok(tenants
            .iter()
            .zip(admitted)
            .map(|(cfg, a)| {
                let inner = TenantInner::new(self.clone(), a.id, cfg, a.quota, a.streams);
                self.inner.gate.add_tenant(
                    inner.id,
                    inner.weight,
                    inner.priority,
                    inner.metrics.clone(),
                );
                Tenant::from_inner(inner)
            })
            .collect())
    }
}

/// A snapshot of a tenant's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TenantStats {
    /// Bytes its live buffers consume.
    pub used_bytes: u64,
    /// Highest `used_bytes`.
    pub peak_bytes: u64,
    /// Its quota.
    pub quota_bytes: u64,
    /// Successful allocations.
    pub allocations: u64,
    /// Allocations refused by the quota.
    pub quota_rejections: u64,
    /// Allocations failed with device out-of-memory.
    pub out_of_memory: u64,
    /// Compute slots granted.
    pub slot_grants: u64,
    /// Time its slots were held, in nanoseconds.
    pub slot_busy_ns: u64,
}

impl fmt::Debug for Tenant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tenant")
            .field("name", &self.inner.name)
            .field("quota", &self.inner.limit)
            .field("used", &self.used())
            .field("weight", &self.inner.weight)
            .field("streams", &self.inner.streams)
            .finish()
    }
}

impl Tenant {
    pub(crate) fn from_inner(inner: Arc<TenantInner>) -> Self {
        Self { inner }
    }

    /// The tenant's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Its memory quota in bytes (enforced on every allocation).
    pub fn quota(&self) -> u64 {
        self.inner.limit
    }

    /// Bytes its live buffers consume now.
    pub fn used(&self) -> u64 {
        let id = self.inner.id;
        self.inner.pool.inner.state.lock().usage(id).used
    }

    /// The external footprint it declared (reserved, not allocated by the pool).
    pub fn external_footprint(&self) -> u64 {
        self.inner.external
    }

    /// Its compute weight.
    pub fn compute_weight(&self) -> u32 {
        self.inner.weight
    }

    /// Its priority.
    pub fn priority(&self) -> Priority {
        self.inner.priority
    }

    /// Its streams.
    pub fn streams(&self) -> &[StreamId] {
        &self.inner.streams
    }

    /// The pool it belongs to.
    pub fn pool(&self) -> &GpuPool {
        &self.inner.pool
    }

    /// Counters.
    pub fn stats(&self) -> TenantStats {
        let t = &self.inner;
        let SlotUsage {
            grants, busy_ns, ..
        } = t.pool.inner.gate.usage(t.id);
        let u = t.pool.inner.state.lock().usage(t.id);
        TenantStats {
            used_bytes: u.used,
            peak_bytes: u.peak,
            quota_bytes: t.limit,
            allocations: u.allocations,
            quota_rejections: t.quota_rejections.load(Ordering::Relaxed),
            out_of_memory: t.ooms.load(Ordering::Relaxed),
            slot_grants: grants,
            slot_busy_ns: busy_ns,
        }
    }

    /// Compute slot use (grants, busy time, waiting acquires).
    pub fn slot_usage(&self) -> SlotUsage {
        self.inner.pool.inner.gate.usage(self.inner.id)
    }

    /// Allocates `size` bytes usable on every stream of the tenant (model
    /// weights, buffers shared by its leases).
    ///
    /// When it is dropped, the range goes back to the pool only once the
    /// work queued on any of the tenant's streams before the drop has
    /// completed. For a batch's buffers, [`Lease::alloc`] ties the range to
    /// the lease's stream, which makes it reusable sooner.
    pub fn alloc(&self, size: u64) -> Result<PoolBuf, BoxError> {
        self.alloc_in(self.inner.streams[0], size, true)
    }

    /// Allocates `size` bytes for use on `stream` (one of the tenant's)
    /// only: after a drop, `stream` may reuse the range at once (stream
    /// order) and other streams once the work queued on `stream` before the
    /// drop has completed. Use it only for work launched on `stream`.
    ///
    /// Checked against the quota atomically with every other allocation:
    /// `QuotaExceeded` if the rounded size does not fit in what is left,
    /// `DeviceOutOfMemory` if the quota allows it but the device has no room
    /// for a new chunk even after the pool waited for pending frees and
    /// returned its empty chunks. Device waits happen outside the pool lock,
    /// so other tenants' allocations and frees go on meanwhile.
    pub fn alloc_on(&self, stream: StreamId, size: u64) -> Result<PoolBuf, BoxError> {
        self.alloc_in(stream, size, false)
    }

    fn alloc_in(&self, stream: StreamId, size: u64, shared: bool) -> Result<PoolBuf, BoxError> {
        let t = &self.inner;
        if !t.streams.contains(&stream) {
            return Err(BackendError::new(format!(
                "{stream} does not belong to tenant {:?}",
                t.name
            ))
            .into());
        }
        let shared = shared && t.streams.len() > 1;
        // A buffer for several streams takes only ranges free for every
        // stream: one pending on a single stream may still be in use there.
        let lane = if shared { EVERY_STREAM } else { stream };
        let pool = &t.pool.inner;
        let mut st = pool.state.lock();
        let (mut polled, mut waited) = (false, false);
        loop {
            let used = st.usage(t.id).used;
            let limit = t.limit;
            let fits = |g: u64| used.checked_add(g).is_some_and(|n| n <= limit);
            match st.alloc.alloc(size, lane, fits) {
                Ok(a) => {
                    let u = st.usage_mut(t.id);
                    u.used = used + a.size;
                    u.peak = u.peak.max(u.used);
                    u.allocations += 1;
                    let (now, peak) = (u.used, u.peak);
                    drop(st);
                    t.metrics.allocated(now, peak);
                    return Ok(PoolBuf::new(t.clone(), a, size, stream, shared));
                }
                Err(Miss::Refused { granted }) => {
                    drop(st);
                    return Err(self.quota_error(granted, used));
                }
                Err(Miss::TooLarge) => {
                    drop(st);
                    return Err(self.quota_error(size, used));
                }
                Err(Miss::NeedChunk { class, chunk_size }) => {
                    let rounded = st.alloc.round(size).unwrap_or(u64::MAX);
                    if !fits(rounded) {
                        drop(st);
                        return Err(self.quota_error(rounded, used));
                    }
                    if !polled {
                        polled = true;
                        if pool.poll_events(&mut st) {
                            continue;
                        }
                    }
                    // The device call may wait (CUDA synchronizes the new
                    // chunk): outside the lock. The loop re-checks the quota.
                    drop(st);
                    let chunk = pool.backend.alloc_chunk(chunk_size);
                    st = pool.state.lock();
                    match chunk {
                        Ok(addr) => {
                            st.alloc.add_chunk(addr, chunk_size, class);
                        }
                        Err(e) if e.is_out_of_memory() && !waited => {
                            waited = true;
                            // Wait for the streams that hold pending ranges,
                            // without the lock, then reclaim what completed.
                            let streams = pool.streams_to_wait_for(&st);
                            drop(st);
                            for s in streams {
                                if let Err(e) = pool.backend.synchronize(s) {
                                    tracing::debug!(stream = %s, error = %e, "gpu pool: waiting for a stream failed");
                                }
                            }
                            st = pool.state.lock();
                            pool.poll_events(&mut st);
                            pool.release_empty(&mut st);
                        }
                        Err(e) if e.is_out_of_memory() => {
                            let reserved = st.alloc.stats().reserved_bytes;
                            drop(st);
                            t.ooms.fetch_add(1, Ordering::Relaxed);
                            t.metrics.out_of_memory();
                            return Err(DeviceOutOfMemory::new(chunk_size, reserved).into());
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    fn quota_error(&self, requested: u64, used: u64) -> BoxError {
        self.quota_exceeded(requested, used).into()
    }

    fn quota_exceeded(&self, requested: u64, used: u64) -> QuotaExceeded {
        let t = &self.inner;
        t.quota_rejections.fetch_add(1, Ordering::Relaxed);
        t.metrics.quota_rejected();
        QuotaExceeded::new(&t.name, requested, used, t.limit)
    }

    /// Counts `bytes` that a framework allocated on its own memory (libtorch's
    /// CPU allocator hook) against the quota, atomically with the pool's own
    /// allocations, without taking a range from the pool. Refused with
    /// [`QuotaExceeded`] when they do not fit in what is left; nothing is
    /// counted then. Give the bytes back with [`Tenant::uncharge`] when the
    /// framework frees them; they show in `used`, `peak` and the metrics like
    /// the pool's own buffers.
    pub fn charge(&self, bytes: u64) -> Result<(), QuotaExceeded> {
        let t = &self.inner;
        let mut st = t.pool.inner.state.lock();
        let u = st.usage_mut(t.id);
        let used = u.used;
        match used.checked_add(bytes).filter(|&n| n <= t.limit) {
            Some(now) => {
                u.used = now;
                u.peak = u.peak.max(now);
                u.allocations += 1;
                let peak = u.peak;
                drop(st);
                t.metrics.allocated(now, peak);
                Ok(())
            }
            None => {
                drop(st);
                Err(self.quota_exceeded(bytes, used))
            }
        }
    }

    /// Gives back `bytes` counted by [`Tenant::charge`]. More than is in use
    /// leaves zero (never a panic: frees run in destructors).
    pub fn uncharge(&self, bytes: u64) {
        let t = &self.inner;
        let mut st = t.pool.inner.state.lock();
        t.freed(&mut st, bytes);
    }

    /// Waits for a compute slot at the tenant's priority; fails at once
    /// with [`WaitQueueFull`](crate::WaitQueueFull) when the tenant has
    /// [`PoolConfig::max_waiting_acquires`](crate::PoolConfig::max_waiting_acquires)
    /// requests waiting already.
    pub fn acquire_slot(&self) -> Acquire {
        self.acquire_slot_with(self.inner.priority)
    }

    /// Waits for a compute slot; `priority` orders this request among the
    /// tenant's other waiting ones.
    pub fn acquire_slot_with(&self, priority: Priority) -> Acquire {
        let t = &self.inner;
        t.pool
            .inner
            .gate
            .acquire(t.id, &t.name, self.inner.clone(), priority)
    }

    /// The next of the tenant's streams, round robin.
    pub fn next_stream(&self) -> StreamId {
        let i = self.inner.next_stream.fetch_add(1, Ordering::Relaxed);
        self.inner.streams[i % self.inner.streams.len()]
    }

    /// Waits for a compute slot and picks a stream: what one batch needs.
    /// Fails as [`Tenant::acquire_slot`] does.
    pub async fn lease(&self) -> Result<LeasePermit, BoxError> {
        let slot = self.acquire_slot().await?;
        Ok(LeasePermit {
            lease: self.lease_for_slot(),
            slot,
        })
    }

    pub(crate) fn lease_for_slot(&self) -> Lease {
        Lease {
            tenant: self.inner.clone(),
            stream: self.next_stream(),
        }
    }

    /// Checks a measurement of the device memory the tenant's framework
    /// holds (e.g. libtorch's reserved bytes) against its declared
    /// footprint. The pool cannot stop such allocations; this detects them.
    pub fn check_external_usage(&self, measured: u64) -> Result<(), FootprintExceeded> {
        if measured > self.inner.external {
            return Err(FootprintExceeded::new(
                &self.inner.name,
                measured,
                self.inner.external,
            ));
        }
        Ok(())
    }
}

/// What a request runs with: the tenant, the stream to launch on and the
/// priority. Cheap to clone; attached to requests by
/// [`GpuShareLayer`](crate::GpuShareLayer). The compute slot it stands for is
/// held by the [`LeasePermit`] (or the layer's response future).
///
/// Buffers for the work launched under the lease come from
/// [`Lease::alloc`]: on the lease's stream, so a range is never handed to
/// another stream while this one still uses it.
#[derive(Clone)]
pub struct Lease {
    tenant: Arc<TenantInner>,
    stream: StreamId,
}

impl Lease {
    /// The tenant's name.
    pub fn tenant(&self) -> &str {
        &self.tenant.name
    }

    /// The stream to launch on.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The tenant's priority.
    pub fn priority(&self) -> Priority {
        self.tenant.priority
    }

    /// Allocates `size` bytes from the tenant's quota for work launched on
    /// the lease's stream (see [`Tenant::alloc_on`]).
    pub fn alloc(&self, size: u64) -> Result<PoolBuf, BoxError> {
        Tenant::from_inner(self.tenant.clone()).alloc_on(self.stream, size)
    }
}

impl PartialEq for Lease {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.tenant, &other.tenant) && self.stream == other.stream
    }
}

impl Eq for Lease {}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("tenant", &self.tenant.name)
            .field("stream", &self.stream)
            .field("priority", &self.tenant.priority)
            .finish()
    }
}

/// A [`Lease`] with its compute slot; dropping it frees the slot.
#[derive(Debug)]
pub struct LeasePermit {
    lease: Lease,
    slot: SlotPermit,
}

impl LeasePermit {
    /// The lease.
    pub fn lease(&self) -> &Lease {
        &self.lease
    }

    /// The stream to launch on.
    pub fn stream(&self) -> StreamId {
        self.lease.stream
    }

    /// Allocates `size` bytes on the lease's stream ([`Lease::alloc`]).
    pub fn alloc(&self, size: u64) -> Result<PoolBuf, BoxError> {
        self.lease.alloc(size)
    }

    /// Splits into the lease and the slot.
    pub fn into_parts(self) -> (Lease, SlotPermit) {
        (self.lease, self.slot)
    }
}
