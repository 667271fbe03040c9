//! The CUDA backend on cudarc (driver API, loaded at run time).
//!
//! This is the only module of the crate that may use `unsafe`: cudarc's
//! memory-pool and async allocation calls are `unsafe` FFI wrappers. Every
//! block states why its preconditions hold.
#![allow(unsafe_code)]

use std::collections::{BTreeMap, HashMap};
use std::ffi::c_void;
use std::fmt;
use std::sync::Arc;

use cudarc::driver::{result, sys, CudaContext, CudaEvent, CudaStream, DriverError};
use parking_lot::{Mutex, RwLock};
use tower::BoxError;

use super::{Backend, BackendKind, EventId, MemoryInfo, StreamId, StreamPriorityRange};
use crate::error::{BackendError, NoGpu};

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
    /// Live chunks, address => bytes: device work on a range is only queued
    /// when the range lies inside one of them.
    chunks: Mutex<BTreeMap<u64, u64>>,
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
            chunks: Mutex::new(BTreeMap::new()),
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

    /// Sets `bytes` bytes at `addr` to `value`, queued on `stream`. The
    /// pool's buffers call this ([`PoolBuf::memset`](crate::PoolBuf::memset));
    /// the range must lie inside one of this backend's live chunks, else
    /// the call is an error and touches nothing.
    pub(crate) fn memset_d8(
        &self,
        addr: u64,
        bytes: usize,
        value: u8,
        stream: StreamId,
    ) -> Result<(), BackendError> {
        let s = self.range_stream(addr, bytes, stream)?;
        // SAFETY: `addr..addr + bytes` lies inside a live chunk of this
        // backend (checked above), so the driver writes only device memory
        // we own; the set is queued on the caller's stream, and the pool
        // keeps the range (and its chunk) out of other streams' hands until
        // an event recorded on that stream after this call has completed.
        unsafe { result::memset_d8_async(addr, value, bytes, s.cu_stream()) }.map_err(driver_err)
    }

    /// Copies `data` to `addr` on `stream` and waits for the copy; the range
    /// must lie inside one of this backend's live chunks.
    pub(crate) fn copy_htod(
        &self,
        addr: u64,
        data: &[u8],
        stream: StreamId,
    ) -> Result<(), BackendError> {
        let s = self.range_stream(addr, data.len(), stream)?;
        // SAFETY: the destination lies inside a live chunk (checked above);
        // `data` stays borrowed until the stream is synchronized below, so
        // the host memory outlives the copy.
        unsafe { result::memcpy_htod_async(addr, data, s.cu_stream()) }.map_err(driver_err)?;
        s.synchronize().map_err(driver_err)
    }

    /// Copies from `addr` into `out` on `stream` (after the work queued
    /// there) and waits for the copy; the range must lie inside one of this
    /// backend's live chunks.
    pub(crate) fn copy_dtoh(
        &self,
        addr: u64,
        out: &mut [u8],
        stream: StreamId,
    ) -> Result<(), BackendError> {
        let s = self.range_stream(addr, out.len(), stream)?;
        // SAFETY: the source lies inside a live chunk (checked above); `out`
        // is exclusively borrowed until the stream is synchronized below, so
        // nothing reads it mid-copy.
        unsafe { result::memcpy_dtoh_async(out, addr, s.cu_stream()) }.map_err(driver_err)?;
        s.synchronize().map_err(driver_err)
    }

    /// The stream for device work on `addr..addr + bytes`: the range must
    /// lie inside one live chunk of this backend and the stream be ours.
    fn range_stream(
        &self,
        addr: u64,
        bytes: usize,
        stream: StreamId,
    ) -> Result<Arc<CudaStream>, BackendError> {
        let end = u64::try_from(bytes)
            .ok()
            .and_then(|b| addr.checked_add(b))
            .ok_or_else(|| BackendError::new("range exceeds the address space"))?;
        let inside = self
            .chunks
            .lock()
            .range(..=addr)
            .next_back()
            .is_some_and(|(&start, &len)| end <= start.saturating_add(len));
        if !inside {
            return Err(BackendError::new(format!(
                "{bytes} bytes at {addr:#x} are not inside a chunk of this backend"
            )));
        }
        self.stream(stream)
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
        self.chunks.lock().insert(ptr, bytes as u64);
        Ok(ptr)
    }

    fn free_chunk(&self, addr: u64, _bytes: u64) {
        self.chunks.lock().remove(&addr);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Device work is only queued on ranges inside a live chunk: the check
    /// the `unsafe` driver calls above rely on.
    #[test]
    fn device_work_outside_a_live_chunk_is_refused() {
        let Ok(cuda) = CudaBackend::new(0) else {
            eprintln!("skipped: no GPU");
            return;
        };
        let stream = cuda.create_stream(cuda.priority_range().least).unwrap();
        let chunk = cuda.alloc_chunk(1 << 20).unwrap();
        let len = 1usize << 20;
        cuda.memset_d8(chunk, len, 7, stream).unwrap();
        let mut out = vec![0u8; 16];
        cuda.copy_dtoh(chunk + (len as u64) - 16, &mut out, stream)
            .unwrap();
        assert_eq!(out, [7u8; 16]);
        assert!(cuda.memset_d8(chunk, len + 1, 0, stream).is_err());
        assert!(cuda.memset_d8(chunk.wrapping_sub(1), 1, 0, stream).is_err());
        assert!(cuda.copy_htod(chunk + len as u64, &[0u8], stream).is_err());
        assert!(cuda.memset_d8(u64::MAX, 2, 0, stream).is_err());
        cuda.synchronize(stream).unwrap();
        cuda.free_chunk(chunk, len as u64);
        assert!(
            cuda.memset_d8(chunk, 1, 0, stream).is_err(),
            "a freed chunk"
        );
        cuda.release_stream(stream);
    }
}
