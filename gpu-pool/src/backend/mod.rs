//! Level 2: where chunks, streams and events come from.
//!
//! [`HostBackend`] serves aligned host memory with simulated streams and
//! events (for tests and CPU-only machines, with injectable out-of-memory,
//! latency and stalled streams). `CudaBackend` (feature `cuda`) serves device
//! memory from a CUDA memory pool through cudarc, loaded dynamically.

#[cfg(feature = "cuda")]
mod cuda;
mod host;

use std::fmt;

use serde::{Deserialize, Serialize};

pub(crate) use crate::alloc::StreamId;
use crate::error::BackendError;
#[cfg(feature = "cuda")]
pub use cuda::{CudaBackend, RawAlloc};
pub use host::{HostBackend, HostConfig};

/// Which backend a pool runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackendKind {
    /// Host memory with simulated streams ([`HostBackend`]).
    Host,
    /// A CUDA device through cudarc.
    Cuda,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Host => "host",
            BackendKind::Cuda => "cuda",
        })
    }
}

/// An event recorded on a stream; complete once the work queued on the
/// stream before it has finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EventId(pub u64);

/// Free and total memory of the device, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryInfo {
    /// Bytes free on the device now.
    pub free: u64,
    /// Bytes on the device.
    pub total: u64,
}

/// Stream priorities the device accepts, in the device's own numbers
/// (CUDA: lower number = higher priority, e.g. least 0, greatest -5).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StreamPriorityRange {
    /// The value for the lowest priority.
    pub least: i32,
    /// The value for the highest priority.
    pub greatest: i32,
}

/// The device-facing operations the pool needs.
///
/// Addresses are device pointers as integers (`CUdeviceptr` for CUDA, the
/// host address for [`HostBackend`]). Implementations must not panic;
/// failures are [`BackendError`]s, and release paths record errors instead
/// of returning them.
pub trait Backend: Send + Sync + fmt::Debug + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// A human-readable device name.
    fn device_name(&self) -> String;

    /// Free and total memory of the device.
    fn memory_info(&self) -> Result<MemoryInfo, BackendError>;

    /// The range of stream priorities.
    fn priority_range(&self) -> StreamPriorityRange;

    /// Reserves a chunk of `bytes` (aligned to at least 256 B); returns its
    /// address. Running out is [`BackendError::out_of_memory`].
    fn alloc_chunk(&self, bytes: u64) -> Result<u64, BackendError>;

    /// Gives a chunk back. Only called once no work uses it.
    fn free_chunk(&self, addr: u64, bytes: u64);

    /// Creates a stream with a priority inside [`Backend::priority_range`].
    fn create_stream(&self, priority: i32) -> Result<StreamId, BackendError>;

    /// Destroys a stream the pool no longer uses. Work queued on it still
    /// completes and events recorded on it stay valid; its id may be handed
    /// out again by [`Backend::create_stream`].
    fn release_stream(&self, stream: StreamId);

    /// Records the work queued on `stream` so far. `None` means the backend
    /// knows that work is already complete (no event needed).
    fn record_event(&self, stream: StreamId) -> Result<Option<EventId>, BackendError>;

    /// Whether the work before `event` has completed. An event that failed
    /// counts as complete (its context is broken; waiting would hang).
    fn event_complete(&self, event: EventId) -> bool;

    /// Drops an event the pool no longer needs.
    fn release_event(&self, event: EventId);

    /// Blocks until the work queued on `stream` has completed.
    fn synchronize(&self, stream: StreamId) -> Result<(), BackendError>;

    /// This backend as a [`CudaBackend`], if it is one (for copies, memsets
    /// and kernel launches on a pool's buffers).
    #[cfg(feature = "cuda")]
    fn as_cuda(&self) -> Option<&CudaBackend> {
        None
    }
}
