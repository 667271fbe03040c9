use std::fmt;
use std::sync::Arc;

use super::account::TenantInner;
use super::device::Deferred;
use crate::alloc::{Allocation, BlockId, StreamId};
#[cfg(feature = "cuda")]
use crate::error::BackendError;

/// Deferred frees kept before a drop polls their events.
const MAX_DEFERRED: usize = 256;

/// A buffer of device memory owned by a tenant; its range goes back to the
/// pool on drop.
///
/// On drop the pool records an event on the buffer's stream: the range is
/// reusable at once on that stream and by other streams once the work
/// queued before the drop has completed. `device_ptr` is a `CUdeviceptr`
/// on the CUDA backend: pass `&buf.device_ptr()` as a cudarc kernel argument.
pub struct PoolBuf {
    tenant: Arc<TenantInner>,
    block: BlockId,
    addr: u64,
    size: u64,
    requested: u64,
    stream: StreamId,
    /// Usable on every stream of the tenant ([`Tenant::alloc`](crate::Tenant::alloc)).
    shared: bool,
}

impl PoolBuf {
    pub(crate) fn new(
        tenant: Arc<TenantInner>,
        a: Allocation,
        requested: u64,
        stream: StreamId,
        shared: bool,
    ) -> Self {
        Self {
            tenant,
            block: a.block,
            addr: a.addr,
            size: a.size,
            requested,
            stream,
            shared,
        }
    }

    /// The device address of the first byte.
    pub fn device_ptr(&self) -> u64 {
        self.addr
    }

    /// Bytes asked for.
    pub fn len(&self) -> u64 {
        self.requested
    }

    /// Whether zero bytes were asked for (the buffer still has an address).
    pub fn is_empty(&self) -> bool {
        self.requested == 0
    }

    /// Bytes the buffer consumes from the quota (rounded up to the
    /// alignment, plus any tail too small to split off).
    pub fn consumed(&self) -> u64 {
        self.size
    }

    /// The stream the buffer is used on (for a buffer from
    /// [`Tenant::alloc`](crate::Tenant::alloc), the tenant's first stream:
    /// copies go there, kernels may use it on any of the tenant's streams).
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// Whether the buffer may be used on every stream of its tenant.
    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The owning tenant's name.
    pub fn tenant(&self) -> &str {
        &self.tenant.name
    }

    /// Fills the buffer with `value`, queued on the buffer's stream (it runs
    /// after the work queued there before, and before the buffer's range can
    /// be reused by another stream). CUDA pools only.
    #[cfg(feature = "cuda")]
    pub fn memset(&mut self, value: u8) -> Result<(), BackendError> {
        let bytes = usize::try_from(self.len())
            .map_err(|_| BackendError::new("buffer exceeds the address space"))?;
        self.cuda()?.memset_d8(self.addr, bytes, value, self.stream)
    }

    /// Copies `data` into the start of the buffer, on the buffer's stream,
    /// and waits for the copy. `data` longer than the buffer is an error.
    /// CUDA pools only.
    #[cfg(feature = "cuda")]
    pub fn copy_from_host(&mut self, data: &[u8]) -> Result<(), BackendError> {
        self.fits(data.len())?;
        self.cuda()?.copy_htod(self.addr, data, self.stream)
    }

    /// Copies the start of the buffer into `out`, on the buffer's stream
    /// (after the work queued there), and waits for the copy. `out` longer
    /// than the buffer is an error. CUDA pools only.
    #[cfg(feature = "cuda")]
    pub fn copy_to_host(&self, out: &mut [u8]) -> Result<(), BackendError> {
        self.fits(out.len())?;
        self.cuda()?.copy_dtoh(self.addr, out, self.stream)
    }

    /// The CUDA backend of the buffer's own pool.
    #[cfg(feature = "cuda")]
    fn cuda(&self) -> Result<&crate::backend::CudaBackend, BackendError> {
        self.tenant.pool.inner.backend.as_cuda().ok_or_else(|| {
            BackendError::new(format!(
                "buffer of tenant {:?} is not on a CUDA pool",
                self.tenant.name
            ))
        })
    }

    #[cfg(feature = "cuda")]
    fn fits(&self, bytes: usize) -> Result<(), BackendError> {
        if u64::try_from(bytes).map_or(true, |b| b > self.len()) {
            return Err(BackendError::new(format!(
                "{bytes} bytes do not fit in a buffer of {}",
                self.len()
            )));
        }
        Ok(())
    }
}

impl fmt::Debug for PoolBuf {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PoolBuf")
            .field("tenant", &self.tenant.name)
            .field("device_ptr", &format_args!("{:#x}", self.addr))
            .field("len", &self.requested)
            .field("consumed", &self.size)
            .field("stream", &self.stream)
            .finish()
    }
}

impl Drop for PoolBuf {
    fn drop(&mut self) {
        let t = &self.tenant;
        let pool = &t.pool.inner;
        let mut st = pool.state.lock();
        // Streams whose event could not be recorded: waited for below,
        // outside the pool lock.
        let mut unrecorded = Vec::new();
        let mut events = Vec::new();
        let mut pending = None;
        if self.shared {
            for &s in &t.streams {
                match pool.backend.record_event(s) {
                    Ok(Some(ev)) => events.push((s, ev)),
                    Ok(None) => {}
                    Err(e) => {
                        tracing::warn!(stream = %s, error = %e, "recording a free event failed; synchronizing");
                        unrecorded.push(s);
                    }
                }
            }
        } else {
            match pool.record_free(&mut st, self.stream) {
                Ok(p) => pending = p,
                Err(e) => {
                    tracing::warn!(stream = %self.stream, error = %e, "recording a free event failed; synchronizing");
                    unrecorded.push(self.stream);
                }
            }
        }
        if !unrecorded.is_empty() {
            drop(st);
            let synced = unrecorded
                .iter()
                .all(|&s| pool.backend.synchronize(s).is_ok());
            st = pool.state.lock();
            if !synced {
                // Neither an event nor a synchronize worked: the device
                // context is broken. Keeping the range out of circulation is
                // the only safe choice; it is reported, never a panic.
                for (_, ev) in events {
                    pool.backend.release_event(ev);
                }
                drop(st);
                tracing::error!(stream = %self.stream, "gpu pool: buffer leaked, stream state unknown");
                return;
            }
        }
        if !events.is_empty() {
            // Work on several streams may still use the range: it stays
            // allocated until all of it completes, but leaves the quota now
            // (as ranges pending on one stream do).
            st.deferred.push(Deferred {
                block: self.block,
                events,
            });
            t.freed(&mut st, self.size);
            if st.deferred.len() > MAX_DEFERRED {
                // Event queries only: keeps the list short between misses.
                pool.poll_events(&mut st);
            }
            return;
        }
        match st.alloc.free(self.block, pending) {
            // Under the pool lock, so quota checks never see a block that is
            // back in the allocator as still in use.
            Ok(size) => t.freed(&mut st, size),
            Err(e) => tracing::error!(error = %e, "gpu pool: invalid free ignored"),
        }
    }
}
