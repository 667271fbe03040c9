//! Fractional GPU sharing inside one process: enforced memory quotas,
//! weighted compute shares and prioritised streams per tenant.
//!
//! Ray's `num_gpus: 0.33` is a scheduling label: nothing stops one replica
//! from taking the others' memory. Here a tenant's fraction is a quota
//! checked on every allocation, its compute weight is its share of a
//! weighted-fair gate of execution slots, and its streams get the device
//! priority of the tenant. It runs on a CUDA device (feature `cuda`, cudarc
//! loaded dynamically) or, with no GPU, on host memory.
//!
//! Three levels, as cudarc does it:
//! 1. [`Allocator`]: a pure-Rust offset allocator (best fit, coalescing, size
//!    classes, alignment, stream-ordered reuse).
//! 2. [`Backend`]: chunks, streams and events ([`HostBackend`], and
//!    `CudaBackend` behind `cuda`).
//! 3. [`GpuPool`] / [`Tenant`] / [`PoolBuf`]: admission, quotas, leases;
//!    [`GpuShareLayer`] for tower; per-tenant [`metrics`].
//!
//! # Example: three models at a third of the device each
//!
//! ```
//! use convoy_gpu_pool::{GpuPool, PoolConfig, QuotaExceeded, Share, TenantConfig};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! // CUDA when built with `cuda` and a GPU is present, host memory otherwise.
//! let pool = GpuPool::auto(PoolConfig::default().host_capacity(64 << 20))?;
//! let [resnet, bert, yolo]: [_; 3] = pool
//!     .admit_all([
//!         TenantConfig::new("resnet", Share::fraction(0.33).compute_weight(1)),
//!         TenantConfig::new("bert", Share::fraction(0.33).compute_weight(2)),
//!         TenantConfig::new("yolo", Share::fraction(0.33).compute_weight(1).streams(2)),
//!     ])?
//!     .try_into()
//!     .unwrap();
//!
//! // Each quota is enforced: resnet cannot take bert's memory.
//! let quota = resnet.quota();
//! let weights = resnet.alloc(quota / 2)?;
//! let err = resnet.alloc(quota).unwrap_err();
//! assert!(err.is::<QuotaExceeded>());
//! let activations = bert.alloc(quota / 2)?; // bert's third is intact
//!
//! // A batch runs under a lease: a compute slot (weighted fair) + a stream.
//! let lease = yolo.lease().await?;
//! println!("yolo launches on {}", lease.stream());
//! drop((weights, activations, lease));
//! # Ok(()) }
//! ```
#![cfg_attr(docsrs, feature(doc_cfg))]

mod alloc;
mod backend;
mod error;
mod gate;
pub mod metrics;
mod pool;
mod priority;
mod share;

pub use alloc::{
    Allocation, Allocator, AllocatorConfig, AllocatorStats, BlockId, ChunkId, InvalidBlock, Miss,
    ReleasedChunk, SizeClass, StreamId,
};
pub use backend::{
    Backend, BackendKind, EventId, HostBackend, HostConfig, MemoryInfo, StreamPriorityRange,
};
#[cfg(feature = "cuda")]
pub use backend::{CudaBackend, RawAlloc};
/// cudarc, re-exported for launching kernels on leased streams.
#[cfg(feature = "cuda")]
pub use cudarc;
pub use error::{
    BackendError, ConfigError, ConfigErrorKind, DeviceOutOfMemory, FootprintExceeded, NoGpu,
    Overcommitted, QuotaExceeded, WaitQueueFull,
};
pub use gate::{Acquire, SlotPermit, SlotUsage};
pub use pool::{
    GpuPool, Lease, LeasePermit, MemoryShare, PoolBuf, PoolConfig, Share, Tenant, TenantConfig,
    TenantStats,
};
pub use priority::Priority;
pub use share::{GpuShare, GpuShareLayer, LeaseCarrier, Leased, ResponseFuture};

/// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;
