//! The CUDA side of the hooks: libtorch's CUDA memory from the current
//! tenant's pool, and a lease's stream as libtorch's current stream.
//!
//! With feature `cuda`; the shim has the CUDA hooks when the venv's CUDA
//! headers were there at build time ([`super::has_cuda`]), else
//! [`install_cuda`] and [`CudaStreamScope::enter`] refuse. Run on a GPU
//! only: without one the tests skip.

use std::collections::HashMap;
use std::sync::LazyLock;

use convoy_gpu_pool::{PoolBuf, QuotaExceeded};
use parking_lot::Mutex;

use super::{entry, ffi, HookError};

/// The pool buffers handed to libtorch, by address.
static BUFFERS: LazyLock<Mutex<HashMap<u64, PoolBuf>>> = LazyLock::new(Default::default);

/// Makes libtorch allocate CUDA memory from the current tenant's pool
/// (`CUDAPluggableAllocator`). Must run before libtorch's first CUDA
/// allocation, and then every CUDA allocation must happen under a tenant's
/// [`Scope`](super::Scope): one on a thread with none is refused.
pub fn install_cuda() -> Result<(), HookError> {
    if ffi::install_cuda() {
        Ok(())
    } else {
        Err(HookError(if super::has_cuda() {
            "libtorch refused the CUDA allocator (it must be set before the first CUDA allocation)"
                .into()
        } else {
            "the allocator hooks were built without the CUDA headers".into()
        }))
    }
}

#[cfg_attr(not(convoy_shim_cuda), allow(dead_code))]
pub(super) fn alloc(key: u64, bytes: u64, _device: i32, _stream: u64) -> Result<u64, String> {
    let Some(e) = entry(key) else {
        return Err(format!(
            "{bytes} bytes of CUDA memory asked for on a thread with no tenant"
        ));
    };
    match e.tenant.alloc(bytes) {
        Ok(buf) => {
            let addr = buf.device_ptr();
            e.charged
                .fetch_add(buf.consumed(), std::sync::atomic::Ordering::Relaxed);
            BUFFERS.lock().insert(addr, buf);
            Ok(addr)
        }
        Err(err) => {
            let message = err.to_string();
            if let Some(q) = err.downcast_ref::<QuotaExceeded>() {
                e.refuse(q.clone());
            }
            Err(message)
        }
    }
}

#[cfg_attr(not(convoy_shim_cuda), allow(dead_code))]
pub(super) fn free(addr: u64) {
    let buf = BUFFERS.lock().remove(&addr);
    // Dropped outside the map's lock: the pool records its free event.
    drop(buf);
}

/// libtorch's current CUDA stream on `device` for this thread, as the
/// integer of its `cudaStream_t` (0 when libtorch has none to give).
pub fn current_cuda_stream(device: i32) -> u64 {
    ffi::cuda_current_stream(device)
}

/// A CUDA stream made libtorch's current stream on this thread (for a
/// forward pass under a lease); the previous one is restored on drop.
#[derive(Debug)]
pub struct CudaStreamScope {
    _thread: std::marker::PhantomData<*const ()>,
}

impl CudaStreamScope {
    /// Makes `stream` (a `cudaStream_t`, e.g. the lease's stream from
    /// `CudaBackend::cuda_stream(..).cu_stream() as u64`) current on
    /// `device`. The caller keeps the stream alive for the scope.
    pub fn enter(stream: u64, device: i32) -> Result<Self, HookError> {
        if ffi::cuda_stream_enter(stream, device) {
            Ok(Self {
                _thread: std::marker::PhantomData,
            })
        } else {
            Err(HookError(format!(
                "libtorch refused stream {stream:#x} on cuda:{device}"
            )))
        }
    }
}

impl Drop for CudaStreamScope {
    fn drop(&mut self) {
        ffi::cuda_stream_exit();
    }
}
