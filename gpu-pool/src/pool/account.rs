//! The one owner of a tenant's state: its identity, quota, streams and
//! counters, shared by the tenant's handles ([`Tenant`](crate::Tenant)) and
//! its buffers ([`PoolBuf`](crate::PoolBuf)). Below both, above the device.

use std::sync::atomic::{AtomicU64, AtomicUsize};
use std::sync::Arc;

use super::config::TenantConfig;
use super::device::{GpuPool, PoolState};
use crate::alloc::StreamId;
use crate::metrics::TenantMetrics;
use crate::priority::Priority;

/// What the handles and the buffers of one tenant share.
pub(crate) struct TenantInner {
    pub(crate) pool: GpuPool,
    pub(crate) id: u32,
    pub(crate) name: Arc<str>,
    pub(crate) limit: u64,
    pub(crate) external: u64,
    pub(crate) weight: u32,
    pub(crate) priority: Priority,
    pub(crate) streams: Vec<StreamId>,
    pub(crate) next_stream: AtomicUsize,
    pub(crate) quota_rejections: AtomicU64,
    pub(crate) ooms: AtomicU64,
    pub(crate) metrics: TenantMetrics,
}

impl TenantInner {
    pub(crate) fn new(
        pool: GpuPool,
        id: u32,
        cfg: &TenantConfig,
        limit: u64,
        streams: Vec<StreamId>,
    ) -> Arc<Self> {
        Arc::new(Self {
            pool,
            id,
            name: Arc::from(cfg.name.as_str()),
            limit,
            external: cfg.share.external_footprint,
            weight: cfg.share.compute_weight,
            priority: cfg.share.priority,
            streams,
            next_stream: AtomicUsize::new(0),
            quota_rejections: AtomicU64::new(0),
            ooms: AtomicU64::new(0),
            metrics: TenantMetrics::new(&cfg.name, limit),
        })
    }

    /// Returns `size` bytes to the tenant; called under the pool lock.
    pub(crate) fn freed(&self, st: &mut PoolState, size: u64) {
        let u = st.usage_mut(self.id);
        // Runs in `Drop`: never panic, even on an accounting bug.
        u.used = u.used.saturating_sub(size);
        self.metrics.freed(u.used);
    }
}

impl Drop for TenantInner {
    fn drop(&mut self) {
        self.pool.forget_tenant(self.id, &self.streams);
    }
}
