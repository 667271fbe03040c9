use std::fmt;
use std::sync::Arc;

use super::tenant::TenantInner;
use crate::alloc::{Allocation, BlockId, StreamId};

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
}

impl PoolBuf {
    pub(crate) fn new(
        tenant: Arc<TenantInner>,
        a: Allocation,
        requested: u64,
        stream: StreamId,
    ) -> Self {
        Self {
            tenant,
            block: a.block,
            addr: a.addr,
            size: a.size,
            requested,
            stream,
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

    /// The stream the buffer is used on.
    pub fn stream(&self) -> StreamId {
        self.stream
    }

    /// The owning tenant's name.
    pub fn tenant(&self) -> &str {
        &self.tenant.name
    }

    /// Whether the buffer was allocated from `backend` (the same object, not
    /// merely the same kind): device operations check this before touching
    /// the buffer's address.
    #[cfg(feature = "cuda")]
    pub(crate) fn is_from(&self, backend: *const ()) -> bool {
        std::ptr::eq(
            Arc::as_ptr(&self.tenant.pool.inner.backend).cast::<()>(),
            backend,
        )
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
        let pool = &self.tenant.pool.inner;
        let mut st = pool.state.lock();
        let Ok(pending) = pool.record_free(&mut st, self.stream) else {
            // Neither an event nor a synchronize worked: the device context
            // is broken. Keeping the range out of circulation is the only
            // safe choice; it is reported, never a panic.
            tracing::error!(stream = %self.stream, "gpu pool: buffer leaked, stream state unknown");
            return;
        };
        match st.alloc.free(self.block, pending) {
            Ok(size) => {
                // Under the pool lock, so quota checks never see a block
                // that is back in the allocator as still in use.
                self.tenant.freed(&mut st, size);
                drop(st);
            }
            Err(e) => tracing::error!(error = %e, "gpu pool: invalid free ignored"),
        }
    }
}
