use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use tower::BoxError;

use super::config::{PoolConfig, TenantConfig};
use crate::alloc::{Allocator, AllocatorStats, BlockId, StreamId};
use crate::backend::{Backend, BackendKind, EventId, HostBackend, HostConfig};
use crate::error::BackendError;
use crate::error::{ConfigError, ConfigErrorKind, FootprintExceeded, Overcommitted};
use crate::gate::Gate;

/// Events per stream kept before they are folded into the newest one.
const MAX_EVENTS_PER_STREAM: usize = 256;

/// The pool of one device: a budget shared by admitted tenants, the
/// allocator over the device's chunks, and the compute gate.
///
/// Cloning is cheap and shares the pool. See the crate docs for an example.
#[derive(Clone)]
pub struct GpuPool {
    pub(crate) inner: Arc<PoolInner>,
}

pub(crate) struct PoolInner {
    pub(crate) backend: Arc<dyn Backend>,
    pub(crate) state: Mutex<PoolState>,
    pub(crate) gate: Arc<Gate>,
    admission: Mutex<Admission>,
    budget: u64,
    used_at_start: u64,
    fallback_reason: Option<String>,
}

pub(crate) struct PoolState {
    pub(crate) alloc: Allocator,
    /// Per tenant id: memory use, kept under the same lock as the allocator
    /// so the quota check and the allocation are one atomic step.
    usage: Vec<TenantUsage>,
    epoch: u64,
    /// Per stream: events recorded at frees, oldest first, with their epoch.
    events: Vec<VecDeque<(u64, EventId)>>,
    /// Buffers used on several streams, dropped while some of that work
    /// was still queued: their blocks stay allocated until it completes.
    pub(crate) deferred: Vec<Deferred>,
    /// Streams of dropped tenants, released to the backend once no block
    /// waits for them.
    retiring: Vec<StreamId>,
}

/// A block whose free waits for events on several streams.
pub(crate) struct Deferred {
    pub(crate) block: BlockId,
    pub(crate) events: Vec<(StreamId, EventId)>,
}

/// One tenant admitted by [`GpuPool::admit`]: its id, quota and streams.
#[derive(Debug)]
pub(crate) struct Admitted {
    pub(crate) id: u32,
    pub(crate) quota: u64,
    pub(crate) streams: Vec<StreamId>,
}

#[derive(Debug, Default)]
struct Admission {
    next_id: u32,
    /// (id, name, reserved bytes, external footprint)
    tenants: Vec<(u32, String, u64, u64)>,
}

impl fmt::Debug for GpuPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuPool")
            .field("backend", &self.inner.backend.kind())
            .field("budget", &self.inner.budget)
            .field("admitted", &self.admitted_bytes())
            .finish()
    }
}

impl GpuPool {
    /// A pool on `backend`.
    pub fn new(backend: impl Backend, cfg: PoolConfig) -> Result<Self, BoxError> {
        Self::from_arc(Arc::new(backend), cfg, None)
    }

    /// A pool on a shared backend (several pools must not share one device
    /// budget; this is for keeping a handle to the backend, e.g. test hooks).
    pub fn from_arc(
        backend: Arc<dyn Backend>,
        cfg: PoolConfig,
        fallback_reason: Option<String>,
    ) -> Result<Self, BoxError> {
        cfg.validate()?;
        let info = backend.memory_info()?;
        let mut budget = (info.free as f64 * cfg.headroom).floor() as u64;
        if let Some(cap) = cfg.budget_bytes {
            budget = budget.min(cap);
        }
        let alloc = Allocator::new(cfg.allocator.clone())?;
        tracing::info!(
            backend = %backend.kind(),
            device = %backend.device_name(),
            budget,
            "gpu pool created"
        );
        Ok(Self {
            inner: Arc::new(PoolInner {
                backend,
                state: Mutex::new(PoolState {
                    alloc,
                    usage: Vec::new(),
                    epoch: 0,
                    events: Vec::new(),
                    deferred: Vec::new(),
                    retiring: Vec::new(),
                }),
                gate: Gate::new(cfg.compute_slots, cfg.max_waiting_acquires),
                admission: Mutex::new(Admission::default()),
                budget,
                used_at_start: info.total.saturating_sub(info.free),
                fallback_reason,
            }),
        })
    }

    /// A pool on the first CUDA device when the `cuda` feature is on and a
    /// driver and device are present, else on a [`HostBackend`] of
    /// `cfg.host_capacity` bytes. [`GpuPool::backend_kind`] and
    /// [`GpuPool::fallback_reason`] say which and why.
    pub fn auto(cfg: PoolConfig) -> Result<Self, BoxError> {
        #[cfg(feature = "cuda")]
        let reason = match crate::backend::CudaBackend::new(0) {
            Ok(cuda) => return Self::new(cuda, cfg),
            Err(e) => format!("{e}"),
        };
        #[cfg(not(feature = "cuda"))]
        let reason = String::from("built without the `cuda` feature");
        tracing::info!(%reason, "gpu pool falls back to the host backend");
        let host = HostBackend::new(HostConfig::with_capacity(cfg.host_capacity));
        Self::from_arc(Arc::new(host), cfg, Some(reason))
    }

    /// Which backend the pool runs on.
    pub fn backend_kind(&self) -> BackendKind {
        self.inner.backend.kind()
    }

    /// Why [`GpuPool::auto`] chose the host backend, if it did.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.inner.fallback_reason.as_deref()
    }

    /// The device name.
    pub fn device_name(&self) -> String {
        self.inner.backend.device_name()
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.inner.backend
    }

    /// The CUDA backend, when the pool runs on one: copies to and from
    /// buffers, memsets, the context for kernel launches.
    #[cfg(feature = "cuda")]
    pub fn cuda(&self) -> Option<&crate::backend::CudaBackend> {
        self.inner.backend.as_cuda()
    }

    /// Bytes tenants may reserve in total.
    pub fn budget(&self) -> u64 {
        self.inner.budget
    }

    /// Bytes reserved by admitted tenants (quotas plus external footprints).
    pub fn admitted_bytes(&self) -> u64 {
        self.inner
            .admission
            .lock()
            .tenants
            .iter()
            .map(|t| t.2)
            .sum()
    }

    /// Compute slots of the gate.
    pub fn compute_slots(&self) -> u32 {
        self.inner.gate.slots()
    }

    /// Compute slots free now.
    pub fn free_compute_slots(&self) -> u32 {
        self.inner.gate.free_slots()
    }

    /// Admission of `tenants`, all or none: validates each share, refuses
    /// duplicates and over-commit (quotas plus external footprints past the
    /// budget, with the tenants involved named), creates their streams and
    /// records their reservations. The tenant level (`GpuPool::admit_all`)
    /// turns each admission into a tenant.
    pub(crate) fn admit(&self, tenants: &[TenantConfig]) -> Result<Vec<Admitted>, BoxError> {
        let budget = self.inner.budget;
        // Streams of dropped tenants whose work completed go back first.
        self.poll_events();
        let mut adm = self.inner.admission.lock();
        let mut planned: Vec<(String, u64, u64)> = Vec::new();
        for t in tenants {
            t.share.validate()?;
            if t.name.is_empty() {
                return Err(
                    ConfigError::new(ConfigErrorKind::EmptyName, "tenant name is empty").into(),
                );
            }
            if adm.tenants.iter().any(|x| x.1 == t.name) || planned.iter().any(|x| x.0 == t.name) {
                return Err(ConfigError::new(
                    ConfigErrorKind::DuplicateTenant,
                    format!("tenant {:?} is already admitted", t.name),
                )
                .into());
            }
            let quota = t.share.quota_bytes(budget);
            let reserved = quota.saturating_add(t.share.external_footprint);
            planned.push((t.name.clone(), quota, reserved));
        }
        let total = adm
            .tenants
            .iter()
            .map(|t| t.2)
            .chain(planned.iter().map(|p| p.2))
            .fold(0u64, u64::saturating_add);
        if total > budget {
            let names = adm
                .tenants
                .iter()
                .map(|t| t.1.clone())
                .chain(planned.iter().map(|p| p.0.clone()))
                .collect();
            return Err(Overcommitted::new(names, total, budget).into());
        }
        let range = self.inner.backend.priority_range();
        // Every stream first: a failure gives back what was created before
        // any tenant exists (a tenant dropped here would re-enter admission).
        let mut created: Vec<Vec<StreamId>> = Vec::with_capacity(tenants.len());
        for t in tenants {
            let prio = t
                .share
                .priority
                .stream_priority(range.least, range.greatest);
            let mut streams = Vec::with_capacity(t.share.streams as usize);
            for _ in 0..t.share.streams {
                match self.inner.backend.create_stream(prio) {
                    Ok(s) => streams.push(s),
                    Err(e) => {
                        for &s in created.iter().flatten().chain(&streams) {
                            self.inner.backend.release_stream(s);
                        }
                        return Err(e.into());
                    }
                }
            }
            created.push(streams);
        }
        let mut out = Vec::with_capacity(tenants.len());
        for ((t, (_, quota, reserved)), streams) in tenants.iter().zip(&planned).zip(created) {
            let id = adm.next_id;
            adm.next_id += 1;
            adm.tenants
                .push((id, t.name.clone(), *reserved, t.share.external_footprint));
            out.push(Admitted {
                id,
                quota: *quota,
                streams,
            });
        }
        Ok(out)
    }

    /// The last handle of tenant `id` is gone: its reservation and gate
    /// entry go, and its streams are released once no range waits for them.
    pub(crate) fn forget_tenant(&self, id: u32, streams: &[StreamId]) {
        self.inner.admission.lock().tenants.retain(|t| t.0 != id);
        self.inner.gate.remove_tenant(id);
        let mut st = self.inner.state.lock();
        st.retiring.extend_from_slice(streams);
        self.inner.reap_streams(&mut st);
    }

    /// Allocator statistics of the whole pool (all tenants).
    pub fn stats(&self) -> AllocatorStats {
        self.inner.state.lock().alloc.stats()
    }

    /// Polls the events of freed blocks so completed ones become reusable
    /// by every stream (also done on every allocation miss).
    pub fn poll_events(&self) {
        let mut st = self.inner.state.lock();
        self.inner.poll_events(&mut st);
    }

    /// Gives cached chunks that hold no live buffer back to the device.
    /// Returns the bytes released.
    pub fn trim(&self) -> u64 {
        let mut st = self.inner.state.lock();
        self.inner.poll_events(&mut st);
        self.inner.release_empty(&mut st)
    }

    /// Device bytes in use that the pool did not allocate and that were not
    /// in use when it was created: what frameworks allocate on their own
    /// (libtorch), plus other processes on the device.
    pub fn unaccounted_device_bytes(&self) -> Result<u64, BoxError> {
        let info = self.inner.backend.memory_info()?;
        let used = info.total.saturating_sub(info.free);
        let reserved = self.stats().reserved_bytes;
        Ok(used
            .saturating_sub(self.inner.used_at_start)
            .saturating_sub(reserved))
    }

    /// Compares [`GpuPool::unaccounted_device_bytes`] with the sum of the
    /// declared external footprints: `FootprintExceeded` (tenant `"*"`) when
    /// frameworks use more than the tenants declared together.
    pub fn check_external_usage(&self) -> Result<u64, BoxError> {
        let measured = self.unaccounted_device_bytes()?;
        let declared = self.declared_external();
        if measured > declared {
            return Err(FootprintExceeded::new("*", measured, declared).into());
        }
        Ok(measured)
    }

    fn declared_external(&self) -> u64 {
        self.inner
            .admission
            .lock()
            .tenants
            .iter()
            .map(|t| t.3)
            .sum()
    }
}

/// Memory use of one tenant.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TenantUsage {
    pub(crate) used: u64,
    pub(crate) peak: u64,
    pub(crate) allocations: u64,
}

impl PoolState {
    pub(crate) fn usage(&self, tenant: u32) -> TenantUsage {
        self.usage.get(tenant as usize).copied().unwrap_or_default()
    }

    pub(crate) fn usage_mut(&mut self, tenant: u32) -> &mut TenantUsage {
        let i = tenant as usize;
        if self.usage.len() <= i {
            self.usage.resize(i + 1, TenantUsage::default());
        }
        &mut self.usage[i]
    }
}

impl PoolInner {
    /// Moves completed events forward, frees deferred blocks whose work
    /// completed and releases idle retired streams; true if any block
    /// became reusable. Event queries only: never waits for the device.
    pub(crate) fn poll_events(&self, st: &mut PoolState) -> bool {
        let mut progressed = false;
        for s in 0..st.events.len() {
            let mut done = None;
            while let Some(&(epoch, ev)) = st.events[s].front() {
                if !self.backend.event_complete(ev) {
                    break;
                }
                self.backend.release_event(ev);
                st.events[s].pop_front();
                done = Some(epoch);
            }
            if let Some(epoch) = done {
                st.alloc.settle(StreamId(s as u32), epoch);
                progressed = true;
            }
        }
        let mut i = 0;
        while i < st.deferred.len() {
            let d = &st.deferred[i];
            if !d
                .events
                .iter()
                .all(|&(_, e)| self.backend.event_complete(e))
            {
                i += 1;
                continue;
            }
            let d = st.deferred.swap_remove(i);
            for (_, e) in d.events {
                self.backend.release_event(e);
            }
            match st.alloc.free(d.block, None) {
                Ok(_) => progressed = true,
                Err(e) => tracing::error!(error = %e, "gpu pool: invalid deferred free ignored"),
            }
        }
        self.reap_streams(st);
        progressed
    }

    /// Releases retired streams that no pending range or deferred free
    /// waits for (so a reused stream id never inherits old work).
    fn reap_streams(&self, st: &mut PoolState) {
        if st.retiring.is_empty() {
            return;
        }
        let retiring = std::mem::take(&mut st.retiring);
        for s in retiring {
            let waited_on = st.events.get(s.0 as usize).is_some_and(|q| !q.is_empty())
                || st
                    .deferred
                    .iter()
                    .any(|d| d.events.iter().any(|&(ds, _)| ds == s));
            if waited_on {
                st.retiring.push(s);
            } else {
                // No event left: every range freed on it has completed.
                st.alloc.settle(s, u64::MAX);
                self.backend.release_stream(s);
            }
        }
    }

    /// Streams whose completion would make ranges reusable: those with
    /// pending ranges and those deferred frees wait for.
    pub(crate) fn streams_to_wait_for(&self, st: &PoolState) -> Vec<StreamId> {
        let mut v: Vec<StreamId> = st.alloc.pending_streams().collect();
        v.extend(
            st.deferred
                .iter()
                .flat_map(|d| d.events.iter().map(|e| e.0)),
        );
        v.sort_unstable_by_key(|s| s.0);
        v.dedup();
        v
    }

    pub(crate) fn release_empty(&self, st: &mut PoolState) -> u64 {
        let mut bytes = 0;
        for c in st.alloc.release_empty_chunks() {
            self.backend.free_chunk(c.base, c.size);
            bytes += c.size;
        }
        bytes
    }

    /// The epoch a block freed on `stream` now waits for, or `None` when the
    /// stream's work is already complete. Records an event (does not wait);
    /// on an error the caller synchronizes, outside the pool lock.
    pub(crate) fn record_free(
        &self,
        st: &mut PoolState,
        stream: StreamId,
    ) -> Result<Option<u64>, BackendError> {
        let Some(ev) = self.backend.record_event(stream)? else {
            return Ok(None);
        };
        st.epoch += 1;
        let epoch = st.epoch;
        let si = stream.0 as usize;
        if st.events.len() <= si {
            st.events.resize_with(si + 1, VecDeque::new);
        }
        st.events[si].push_back((epoch, ev));
        if st.events[si].len() > MAX_EVENTS_PER_STREAM {
            // The newest event was recorded after every older one, so
            // waiting for it is a safe (later) stand-in for them all.
            let newest = st.events[si].pop_back().expect("just pushed");
            for (_, old) in st.events[si].drain(..) {
                self.backend.release_event(old);
            }
            st.events[si].push_back(newest);
        }
        Ok(Some(epoch))
    }
}

impl Drop for PoolInner {
    fn drop(&mut self) {
        // No buffer is alive (each holds the pool); wait for the streams and
        // give every chunk back.
        let st = self.state.get_mut();
        // Tenants are gone, so their streams are all retiring: wait for
        // each before its ranges and chunks go back.
        for &s in &st.retiring {
            let _ = self.backend.synchronize(s);
        }
        for q in &mut st.events {
            for (_, ev) in q.drain(..) {
                self.backend.release_event(ev);
            }
        }
        for d in std::mem::take(&mut st.deferred) {
            for (_, e) in d.events {
                self.backend.release_event(e);
            }
            let _ = st.alloc.free(d.block, None);
        }
        for s in std::mem::take(&mut st.retiring) {
            self.backend.release_stream(s);
        }
        st.alloc.settle_all();
        for c in st.alloc.release_empty_chunks() {
            self.backend.free_chunk(c.base, c.size);
        }
    }
}
