//! Every byte libtorch allocates for a model, charged to that model's
//! convoy-gpu-pool tenant.
//!
//! A C++ shim (`csrc/convoy_hooks.cpp`) makes a tenant allocator libtorch's
//! CPU allocator (`c10::SetCPUAllocator`, wrapping the default one). Its
//! `allocate` charges the thread's *current tenant* through
//! [`Tenant::charge`] before it allocates, and fails inside libtorch with
//! convoy-gpu-pool's [`QuotaExceeded`] text when the bytes do not fit; the
//! allocation's context keeps the tenant and the size, so its deleter gives
//! the bytes back to the same tenant on whichever thread frees it.
//!
//! Attribution: the model's thread makes the tenant current ([`Registration::enter`])
//! around loading (the weights count) and each forward pass. libtorch runs
//! intra-op work (`at::parallel_for`) on OpenMP workers, and libgomp gives
//! every thread that opens parallel regions its own workers, reused in
//! order by each region it opens; entering a scope opens one region of the
//! same size and tags each of those workers with the tenant, so their
//! allocations are charged to the forward pass they serve. Bytes allocated
//! on a thread with no tenant are counted as unattributed ([`stats`], and
//! the `convoy_models_torch_unattributed_bytes_total` counter).
//!
//! Memory: a tenant's allocations of 128 KiB or more (a tensor's data,
//! nearly all of a forward pass's bytes) are mappings of their own, rounded
//! up to one of four size classes per power of two; a freed one is kept
//! for the same tenant's next allocation of its class, so a warm model's
//! passes touch no new pages, and a tenant's blocks, in use and cached,
//! stay within its quota (a new mapping first unmaps cached blocks). What
//! one tenant frees is never resident on another's behalf: the process's
//! resident memory stays within the sum of the quotas
//! ([`Registration::block_bytes`]). Smaller allocations go to libtorch's
//! default allocator.
//!
//! With feature `cuda` (and the venv's CUDA headers at build time) the shim
//! also has libtorch's CUDA allocations served from the tenant's pool
//! (`CUDAPluggableAllocator`, see `install_cuda`) and a scope that makes a
//! lease's stream libtorch's current one (`CudaStreamScope`).
//!
//! The Rust side of the FFI is `hooks/ffi.rs`, the examples' only file with
//! `unsafe`; the shim calls Rust with integers only (a tenant key, sizes).

#[cfg(feature = "cuda")]
mod cuda;
mod ffi;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock};

use convoy_gpu_pool::{QuotaExceeded, Tenant};
use parking_lot::{Mutex, RwLock};

/// Counter: bytes libtorch asked the CPU allocator for, every thread.
pub const ALLOCATED_BYTES: &str = "convoy_models_torch_allocated_bytes_total";
/// Counter: bytes libtorch allocated on threads with no current tenant
/// (charged to no one).
pub const UNATTRIBUTED_BYTES: &str = "convoy_models_torch_unattributed_bytes_total";

/// What a registered tenant keeps for the shim.
#[derive(Debug)]
struct Entry {
    tenant: Tenant,
    /// Bytes charged so far (never decreases).
    charged: AtomicU64,
    /// The last refusal, for the forward pass that hit it.
    refusal: Mutex<Option<QuotaExceeded>>,
    /// Refusals so far: a pass compares the count before and after it, so
    /// passes of one tenant running at once never take each other's
    /// refusal away.
    refusals: AtomicU64,
}

impl Entry {
    fn refuse(&self, q: QuotaExceeded) {
        *self.refusal.lock() = Some(q);
        self.refusals.fetch_add(1, Ordering::AcqRel);
    }
}

static REGISTRY: LazyLock<RwLock<HashMap<u64, Arc<Entry>>>> = LazyLock::new(Default::default);
static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

fn entry(key: u64) -> Option<Arc<Entry>> {
    if key == 0 {
        return None;
    }
    REGISTRY.read().get(&key).cloned()
}

/// The answer to the shim's charge.
pub(crate) enum Charge {
    Charged,
    Refused(String),
    Unknown,
}

pub(crate) fn charge(key: u64, bytes: u64) -> Charge {
    let Some(e) = entry(key) else {
        return Charge::Unknown;
    };
    match e.tenant.charge(bytes) {
        Ok(()) => {
            e.charged.fetch_add(bytes, Ordering::Relaxed);
            Charge::Charged
        }
        Err(q) => {
            let message = q.to_string();
            e.refuse(q);
            Charge::Refused(message)
        }
    }
}

pub(crate) fn quota(key: u64) -> u64 {
    entry(key).map_or(0, |e| e.tenant.quota())
}

pub(crate) fn credit(key: u64, bytes: u64) {
    if let Some(e) = entry(key) {
        e.tenant.uncharge(bytes);
    }
}

/// The hooks could not be installed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookError(String);

impl std::fmt::Display for HookError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HookError {}

/// Makes the tenant allocator libtorch's CPU allocator (once; idempotent).
/// [`register`] does it; an error when another allocator of higher
/// priority was set already.
pub fn install() -> Result<(), HookError> {
    if ffi::install_cpu() {
        Ok(())
    } else {
        Err(HookError(
            "libtorch kept another CPU allocator of higher priority".into(),
        ))
    }
}

/// A tenant the shim may charge, for as long as the registration lives
/// (libtorch's allocations for it are charged while one of its
/// [`Scope`]s is entered on the allocating thread).
///
/// Drop it after the model: bytes freed later are given back to no one.
#[derive(Debug)]
pub struct Registration {
    key: u64,
    entry: Arc<Entry>,
}

/// Registers `tenant` with the hooks, installing them first.
pub fn register(tenant: Tenant) -> Result<Registration, HookError> {
    install()?;
    let key = NEXT_KEY.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry {
        tenant,
        charged: AtomicU64::new(0),
        refusal: Mutex::new(None),
        refusals: AtomicU64::new(0),
    });
    REGISTRY.write().insert(key, Arc::clone(&entry));
    Ok(Registration { key, entry })
}

impl Registration {
    /// The tenant.
    pub fn tenant(&self) -> &Tenant {
        &self.entry.tenant
    }

    /// Bytes charged to the tenant through the hooks so far (a running
    /// total: frees do not lower it).
    pub fn charged_bytes(&self) -> u64 {
        self.entry.charged.load(Ordering::Relaxed)
    }

    /// Makes the tenant current on this thread and on the OpenMP workers
    /// its libtorch parallel regions run on, until the scope is dropped
    /// (then the previous tenant is current again on this thread).
    pub fn enter(&self) -> Scope<'_> {
        let previous = ffi::enter(self.key);
        ffi::tag_workers(self.key);
        Scope {
            previous,
            _registration: PhantomData,
        }
    }

    /// Bytes of the tenant's blocks (its allocations of 128 KiB or more,
    /// mapped whole and rounded up to a size class): in use, and kept for
    /// its next allocations once freed. Both together stay within the
    /// tenant's quota: a new block first unmaps cached ones.
    pub fn block_bytes(&self) -> BlockBytes {
        let (in_use, cached) = ffi::block_bytes(self.key);
        BlockBytes { in_use, cached }
    }

    /// Where this tenant's refusals stand now: give it to
    /// [`refused_since`](Self::refused_since) after a forward pass.
    pub fn refusal_mark(&self) -> RefusalMark {
        RefusalMark(self.entry.refusals.load(Ordering::Acquire))
    }

    /// The last allocation refused for this tenant since `mark`, if any
    /// was: what failed a forward pass that started at `mark`. Passes of
    /// the tenant running at the same time each see it (none takes it from
    /// the others).
    pub fn refused_since(&self, mark: RefusalMark) -> Option<QuotaExceeded> {
        if self.entry.refusals.load(Ordering::Acquire) == mark.0 {
            return None;
        }
        self.entry.refusal.lock().clone()
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        REGISTRY.write().remove(&self.key);
        ffi::forget(self.key);
    }
}

/// The tenant of a [`Registration`] made current on this thread; the
/// previous one is current again when it is dropped. Not `Send`: it belongs
/// to the thread that entered it.
#[derive(Debug)]
pub struct Scope<'a> {
    previous: u64,
    _registration: PhantomData<(&'a Registration, *const ())>,
}

/// How many refusals a tenant had when a forward pass started
/// ([`Registration::refusal_mark`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefusalMark(u64);

impl Drop for Scope<'_> {
    fn drop(&mut self) {
        ffi::enter(self.previous);
        // The OpenMP workers were tagged with this scope's tenant: give
        // them back the previous one, so that a later pass on this thread
        // with no tenant (or another) is not charged to this one.
        ffi::tag_workers(self.previous);
    }
}

/// Bytes charged through the hooks so far (a running total) to the
/// registered tenants named `tenant`: what libtorch allocated for them.
pub fn charged_bytes(tenant: &str) -> u64 {
    REGISTRY
        .read()
        .values()
        .filter(|e| e.tenant.name() == tenant)
        .map(|e| e.charged.load(Ordering::Relaxed))
        .sum()
}

/// The name of this thread's current tenant, if any.
pub fn current_tenant() -> Option<String> {
    entry(ffi::current()).map(|e| e.tenant.name().to_owned())
}

/// Bytes of a tenant's blocks, see [`Registration::block_bytes`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BlockBytes {
    /// Blocks holding tensors now.
    pub in_use: u64,
    /// Freed blocks kept for the tenant's next allocations (resident, not
    /// charged).
    pub cached: u64,
}

/// The shim's process-wide counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Bytes libtorch asked the CPU allocator for since the hooks were
    /// installed, on every thread.
    pub allocated_bytes: u64,
    /// Bytes of those allocated on a thread with no current tenant: charged
    /// to no one.
    pub unattributed_bytes: u64,
    /// Allocations refused by a tenant's quota.
    pub refused_allocations: u64,
}

/// The shim's counters now (all zero before [`install`]).
pub fn stats() -> Stats {
    let (allocated_bytes, unattributed_bytes, refused_allocations) = ffi::counters();
    Stats {
        allocated_bytes,
        unattributed_bytes,
        refused_allocations,
    }
}

/// Publishes [`stats`] as the [`ALLOCATED_BYTES`] and [`UNATTRIBUTED_BYTES`]
/// counters (the model runtime does it after every forward pass).
pub fn publish_metrics() {
    let s = stats();
    metrics::counter!(ALLOCATED_BYTES).absolute(s.allocated_bytes);
    metrics::counter!(UNATTRIBUTED_BYTES).absolute(s.unattributed_bytes);
}

/// Allocates and frees `bytes` through libtorch's CPU allocator on each
/// OpenMP worker of a parallel region of this thread opened as ATen's
/// `parallel_for` opens them (not on this thread); returns how many
/// workers did. For checking the workers' attribution in tests.
#[doc(hidden)]
pub fn probe_workers(bytes: u64) -> usize {
    ffi::probe_workers(bytes)
}

/// Whether the shim was built with the CUDA hooks (feature `cuda` and the
/// CUDA headers present at build time).
pub fn has_cuda() -> bool {
    ffi::has_cuda()
}

#[cfg(feature = "cuda")]
pub use cuda::{current_cuda_stream, install_cuda, CudaStreamScope};
