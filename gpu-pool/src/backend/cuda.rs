//! The CUDA backend on cudarc (driver API, loaded at run time).
//!
//! This is the only module of the crate that may use `unsafe`: cudarc's
//! memory-pool and async allocation calls are `unsafe` FFI wrappers. Every
//! block states why its preconditions hold.
#![allow(unsafe_code)]

use std::collections::HashMap;
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, DriverError};
use parking_lot::{Mutex, RwLock};
use tower::BoxError;

use super::{Backend, BackendKind, EventId, MemoryInfo, StreamId, StreamPriorityRange};
use crate::error::{BackendError, NoGpu};
use crate::PoolBuf;

/// Spare events kept for reuse (creating one is a driver call).
const SPARE_EVENTS: usize = 1024;

/// A device memory pool handle.
struct MemPool(sys::CUmemoryPool);

// SAFETY: a CUmemoryPool is an opaque driver handle; the driver API is
// thread safe and the handle is only ever passed to driver calls.
unsafe impl Send for MemPool {}
// SAFETY: as above; no Rust-side state is reachable through the handle.
unsafe impl Sync for MemPool {}

/// Live streams by id; released ids are handed out again.
#[derive(Default)]
struct Streams {
    slots: Vec<Option<Arc<CudaStream>>>,
    free: Vec<u32>,
}

#[derive(Default)]
struct Events {
    next: u64,
    live: HashMap<u64, CudaEvent>,
    spare: Vec<CudaEvent>,
}

/// Chunks, streams and events of one CUDA device, through cudarc.
///
/// One context per device (the primary context). Chunks come from the
/// device's default memory pool with the release threshold raised to keep
/// memory between batches (the default of 0 hands it back at every
/// synchronize and stalls the next allocation). Streams are created with
/// `new_stream_with_priority` over the device's priority range.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    pool: MemPool,
    chunk_stream: Arc<CudaStream>,
    streams: RwLock<Streams>,
    events: Mutex<Events>,
    range: StreamPriorityRange,
    name: String,
}

impl fmt::Debug for CudaBackend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CudaBackend")
            .field("ordinal", &self.ctx.ordinal())
            .field("name", &self.name)
            .field(
                "streams",
                &self.streams.read().slots.iter().flatten().count(),
            )
            .finish()
    }
}

fn driver_err(e: DriverError) -> BackendError {
    if e.0 == sys::cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY {
        BackendError::out_of_memory(format!("{e}"))
    } else {
        BackendError::new(format!("{e}"))
    }
}

/// Which raw driver allocation [`CudaBackend::raw_alloc_free`] measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RawAlloc {
    /// `cuMemAlloc` + `cuMemFree`.
    Sync,
    /// `cuMemAllocAsync` + `cuMemFreeAsync` on the device's default pool,
    /// then a stream synchronize (the memory is back in the pool).
    Async,
    /// `cuMemAllocAsync` + `cuMemFreeAsync` without synchronizing: the
    /// driver pool's own cost when work stays queued on one stream.
    AsyncQueued,
}

impl CudaBackend {
    /// Opens device `ordinal`.
    ///
    /// Checks for the driver library before anything else (cudarc panics
    /// without it): no library, no device or an ordinal out of range is a
    /// [`NoGpu`] error; other driver failures are [`BackendError`]s.
    pub fn new(ordinal: usize) -> Result<Self, BoxError> {
        // SAFETY: is_culib_present only tries to load the driver library by
        // name and drops it; no driver function is called.
        if !unsafe { sys::is_culib_present() } {
            return Err(NoGpu::new("the CUDA driver library (libcuda) is not installed").into());
        }
        let count = CudaContext::device_count()
            .map_err(|e| NoGpu::new(format!("the CUDA driver did not initialise: {e}")))?;
        if count <= 0 {
            return Err(NoGpu::new("the CUDA driver reports no device").into());
        }
        if ordinal >= count as usize {
            return Err(NoGpu::new(format!("device {ordinal} requested, {count} present")).into());
        }
        let ctx = CudaContext::new(ordinal).map_err(driver_err)?;
        if !ctx.has_async_alloc() {
            return Err(BackendError::new("device does not support memory pools").into());
        }
        ctx.bind_to_thread().map_err(driver_err)?;
        let (least, greatest) = result::stream::get_priority_range().map_err(driver_err)?;
        // SAFETY: the device handle comes from the live context above.
        let pool =
            unsafe { result::device::get_default_mem_pool(ctx.cu_device()) }.map_err(driver_err)?;
        let mut threshold: u64 = u64::MAX;
        // SAFETY: `pool` is the device's valid default pool and
        // CU_MEMPOOL_ATTR_RELEASE_THRESHOLD takes a cuuint64_t (u64), which
        // `threshold` is and which outlives the call.
        unsafe {
            result::mem_pool::set_attribute(
                pool,
                sys::CUmemPool_attribute::CU_MEMPOOL_ATTR_RELEASE_THRESHOLD,
                (&mut threshold as *mut u64).cast::<c_void>(),
            )
        }
        .map_err(driver_err)?;
        let chunk_stream = ctx.new_stream().map_err(driver_err)?;
        let name = ctx.name().unwrap_or_else(|_| format!("cuda:{ordinal}"));
        Ok(Self {
            ctx,
            pool: MemPool(pool),
            chunk_stream,
            streams: RwLock::new(Streams::default()),
            events: Mutex::new(Events::default()),
            range: StreamPriorityRange { least, greatest },
            name,
        })
    }

    /// The context (for loading modules and launching kernels).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The cudarc stream behind a pool stream, to launch kernels on a lease.
    pub fn cuda_stream(&self, stream: StreamId) -> Option<Arc<CudaStream>> {
        self.streams
            .read()
            .slots
            .get(stream.0 as usize)
            .and_then(Option::clone)
    }

    /// One raw driver allocation and free of `bytes` (see [`RawAlloc`]): the
    /// baselines the pool is measured against in benchmarks.
    pub fn raw_alloc_free(&self, bytes: usize, how: RawAlloc) -> Result<(), BackendError> {
        self.ctx.bind_to_thread().map_err(driver_err)?;
        let s = self.chunk_stream.cu_stream();
        match how {
            RawAlloc::Sync => {
                // SAFETY: the context is bound; the pointer is freed once,
                // right here, and never used.
                let p = unsafe { result::malloc_sync(bytes) }.map_err(driver_err)?;
                // SAFETY: `p` came from malloc_sync and is freed once.
                unsafe { result::free_sync(p) }.map_err(driver_err)
            }
            RawAlloc::Async | RawAlloc::AsyncQueued => {
                // SAFETY: `s` is our live stream; the memory is only freed
                // on the same stream and never read.
                let p = unsafe { result::malloc_async(s, bytes) }.map_err(driver_err)?;
                // SAFETY: `p` was allocated on `s` and is freed once on it.
                unsafe { result::free_async(p, s) }.map_err(driver_err)?;
                if how == RawAlloc::Async {
                    self.chunk_stream.synchronize().map_err(driver_err)?;
                }
                Ok(())
            }
        }
    }

    /// Fills the buffer with `value`, queued on the buffer's stream (it runs
    /// after the work queued there before, and before the buffer's range can
    /// be reused by another stream).
    ///
    /// The buffer must come from a pool on this backend, else the call is an
    /// error and touches nothing.
    pub fn memset(&self, buf: &mut PoolBuf, value: u8) -> Result<(), BackendError> {
        let bytes = usize::try_from(buf.len())
            .map_err(|_| BackendError::new("buffer exceeds the address space"))?;
        let s = self.buf_stream(buf, bytes)?;
        // SAFETY: `buf` was allocated from this backend (checked above), so
        // its address and length lie inside one of our device chunks; the
        // set is queued on the buffer's own stream, and the pool keeps the
        // range (and its chunk) out of other streams' hands until an event
        // recorded on that stream after this call has completed.
        unsafe { result::memset_d8_async(buf.device_ptr(), value, bytes, s.cu_stream()) }
            .map_err(driver_err)
    }

    /// Copies `data` into the start of the buffer, on the buffer's stream,
    /// and waits for the copy. `data` longer than the buffer is an error.
    pub fn copy_to_device(&self, buf: &mut PoolBuf, data: &[u8]) -> Result<(), BackendError> {
        let s = self.buf_stream(buf, data.len())?;
        // SAFETY: the destination lies inside one of our chunks (checked
        // ownership and length); `data` stays borrowed until the stream is
        // synchronized below, so the host memory outlives the copy.
        unsafe { result::memcpy_htod_async(buf.device_ptr(), data, s.cu_stream()) }
            .map_err(driver_err)?;
        s.synchronize().map_err(driver_err)
    }

    /// Copies the start of the buffer into `out`, on the buffer's stream
    /// (after the work queued there), and waits for the copy. `out` longer
    /// than the buffer is an error.
    pub fn copy_to_host(&self, buf: &PoolBuf, out: &mut [u8]) -> Result<(), BackendError> {
        let s = self.buf_stream(buf, out.len())?;
        // SAFETY: the source lies inside one of our chunks (checked
        // ownership and length); `out` is exclusively borrowed until the
        // stream is synchronized below, so nothing reads it mid-copy.
        unsafe { result::memcpy_dtoh_async(out, buf.device_ptr(), s.cu_stream()) }
            .map_err(driver_err)?;
        s.synchronize().map_err(driver_err)
    }

    /// The stream of a buffer that `bytes` of device work may touch: the
    /// buffer must come from this backend and be at least `bytes` long.
    fn buf_stream(&self, buf: &PoolBuf, bytes: usize) -> Result<Arc<CudaStream>, BackendError> {
        if !buf.is_from((self as *const Self).cast::<()>()) {
            return Err(BackendError::new(format!(
                "buffer of tenant {:?} belongs to another pool's backend",
                buf.tenant()
            )));
        }
        if u64::try_from(bytes).map_or(true, |b| b > buf.len()) {
            return Err(BackendError::new(format!(
                "{bytes} bytes do not fit in a buffer of {}",
                buf.len()
            )));
        }
        self.stream(buf.stream())
    }

    fn stream(&self, s: StreamId) -> Result<Arc<CudaStream>, BackendError> {
        self.cuda_stream(s)
            .ok_or_else(|| BackendError::new(format!("unknown {s}")))
    }
}

impl Backend for CudaBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cuda
    }

    fn device_name(&self) -> String {
        self.name.clone()
    }

    fn memory_info(&self) -> Result<MemoryInfo, BackendError> {
        let (free, total) = self.ctx.mem_get_info().map_err(driver_err)?;
        Ok(MemoryInfo {
            free: free as u64,
            total: total as u64,
        })
    }

    fn priority_range(&self) -> StreamPriorityRange {
        self.range
    }

    fn alloc_chunk(&self, bytes: u64) -> Result<u64, BackendError> {
        let bytes = usize::try_from(bytes)
            .map_err(|_| BackendError::out_of_memory("chunk size exceeds the address space"))?;
        self.ctx.bind_to_thread().map_err(driver_err)?;
        // SAFETY: the pool is the device's default pool and the stream is
        // ours and alive; the memory is uninitialised device memory that we
        // only hand out as ranges. Synchronizing below makes it usable from
        // every stream.
        let ptr = unsafe {
            result::mem_pool::alloc_async(self.pool.0, bytes, self.chunk_stream.cu_stream())
        }
        .map_err(driver_err)?;
        self.chunk_stream.synchronize().map_err(driver_err)?;
        Ok(ptr)
    }

    fn free_chunk(&self, addr: u64, _bytes: u64) {
        if let Err(e) = self.ctx.bind_to_thread() {
            tracing::error!(error = %e, "cuda backend: free_chunk could not bind the context");
            return;
        }
        // SAFETY: `addr` was returned by alloc_chunk on this pool and the
        // pool frees a chunk once, after every event of work on it has
        // completed, so no stream still uses it.
        let res = unsafe { result::free_async(addr, self.chunk_stream.cu_stream()) };
        if let Err(e) = res {
            tracing::error!(error = %e, "cuda backend: freeing a chunk failed");
        }
    }

    fn create_stream(&self, priority: i32) -> Result<StreamId, BackendError> {
        let s = self
            .ctx
            .new_stream_with_priority(priority)
            .map_err(driver_err)?;
        let mut streams = self.streams.write();
        let id = match streams.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(streams.slots.len())
                    .map_err(|_| BackendError::new("too many streams"))?;
                streams.slots.push(None);
                id
            }
        };
        streams.slots[id as usize] = Some(s);
        Ok(StreamId(id))
    }

    fn release_stream(&self, stream: StreamId) {
        let mut streams = self.streams.write();
        let Some(s) = streams
            .slots
            .get_mut(stream.0 as usize)
            .and_then(Option::take)
        else {
            tracing::warn!(%stream, "cuda backend: release of an unknown stream ignored");
            return;
        };
        streams.free.push(stream.0);
        drop(streams);
        // cudarc destroys the stream (cuStreamDestroy) when the last handle
        // drops: at once unless a caller of `cuda_stream` still holds one.
        // Work queued on it still completes and events recorded on it stay
        // valid, as the driver guarantees for a destroyed stream.
        drop(s);
    }

    fn record_event(&self, stream: StreamId) -> Result<Option<EventId>, BackendError> {
        let s = self.stream(stream)?;
        let spare = self.events.lock().spare.pop();
        let event = match spare {
            Some(e) => e,
            None => self.ctx.new_event(None).map_err(driver_err)?,
        };
        event.record(&s).map_err(driver_err)?;
        let mut ev = self.events.lock();
        let id = ev.next;
        ev.next += 1;
        ev.live.insert(id, event);
        Ok(Some(EventId(id)))
    }

    fn event_complete(&self, event: EventId) -> bool {
        match self.events.lock().live.get(&event.0) {
            Some(e) => e.try_is_complete().unwrap_or(true),
            None => true,
        }
    }

    fn release_event(&self, event: EventId) {
        let mut ev = self.events.lock();
        if let Some(e) = ev.live.remove(&event.0) {
            if ev.spare.len() < SPARE_EVENTS {
                ev.spare.push(e);
            }
        }
    }

    fn synchronize(&self, stream: StreamId) -> Result<(), BackendError> {
        self.stream(stream)?.synchronize().map_err(driver_err)
    }

    fn as_cuda(&self) -> Option<&CudaBackend> {
        Some(self)
    }
}
