//! Per-tenant metrics through the `metrics` facade.
//!
//! Every series carries a `tenant` label:
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `convoy_gpu_pool_bytes_in_use` | gauge | bytes the tenant's live buffers consume |
//! | `convoy_gpu_pool_bytes_peak` | gauge | highest `bytes_in_use` so far |
//! | `convoy_gpu_pool_bytes_quota` | gauge | the tenant's memory quota |
//! | `convoy_gpu_pool_allocations_total` | counter | successful allocations |
//! | `convoy_gpu_pool_quota_rejections_total` | counter | allocations refused with `QuotaExceeded` |
//! | `convoy_gpu_pool_oom_total` | counter | allocations that failed with `DeviceOutOfMemory` |
//! | `convoy_gpu_pool_slot_wait_seconds` | histogram | time from asking for a compute slot to getting it |
//! | `convoy_gpu_pool_slot_busy_microseconds_total` | counter | slot time used (µs); its rate divided by 10⁶ × slots is the busy share |
//!
//! Handles are registered once per tenant, so the hot path does no label
//! hashing.

use std::time::Duration;

use metrics::{Counter, Gauge, Histogram};

/// Metric names, for dashboards and tests.
pub mod names {
    /// Gauge: bytes in use.
    pub const BYTES_IN_USE: &str = "convoy_gpu_pool_bytes_in_use";
    /// Gauge: peak bytes in use.
    pub const BYTES_PEAK: &str = "convoy_gpu_pool_bytes_peak";
    /// Gauge: memory quota.
    pub const BYTES_QUOTA: &str = "convoy_gpu_pool_bytes_quota";
    /// Counter: allocations.
    pub const ALLOCATIONS: &str = "convoy_gpu_pool_allocations_total";
    /// Counter: quota rejections.
    pub const QUOTA_REJECTIONS: &str = "convoy_gpu_pool_quota_rejections_total";
    /// Counter: device out-of-memory failures.
    pub const OOM: &str = "convoy_gpu_pool_oom_total";
    /// Histogram: compute slot wait, seconds.
    pub const SLOT_WAIT: &str = "convoy_gpu_pool_slot_wait_seconds";
    /// Counter: compute slot busy time, microseconds.
    pub const SLOT_BUSY: &str = "convoy_gpu_pool_slot_busy_microseconds_total";
}

#[derive(Debug, Clone)]
pub(crate) struct TenantMetrics {
    in_use: Gauge,
    peak: Gauge,
    allocations: Counter,
    quota_rejections: Counter,
    oom: Counter,
    slot_wait: Histogram,
    slot_busy: Counter,
}

impl TenantMetrics {
    pub(crate) fn new(tenant: &str, quota: u64) -> Self {
        let label = [("tenant", tenant.to_owned())];
        metrics::gauge!(names::BYTES_QUOTA, &label).set(quota as f64);
        Self {
            in_use: metrics::gauge!(names::BYTES_IN_USE, &label),
            peak: metrics::gauge!(names::BYTES_PEAK, &label),
            allocations: metrics::counter!(names::ALLOCATIONS, &label),
            quota_rejections: metrics::counter!(names::QUOTA_REJECTIONS, &label),
            oom: metrics::counter!(names::OOM, &label),
            slot_wait: metrics::histogram!(names::SLOT_WAIT, &label),
            slot_busy: metrics::counter!(names::SLOT_BUSY, &label),
        }
    }

    pub(crate) fn allocated(&self, in_use: u64, peak: u64) {
        self.allocations.increment(1);
        self.in_use.set(in_use as f64);
        self.peak.set(peak as f64);
    }

    pub(crate) fn freed(&self, in_use: u64) {
        self.in_use.set(in_use as f64);
    }

    pub(crate) fn quota_rejected(&self) {
        self.quota_rejections.increment(1);
    }

    pub(crate) fn out_of_memory(&self) {
        self.oom.increment(1);
    }

    pub(crate) fn slot_wait(&self, wait: Duration) {
        self.slot_wait.record(wait.as_secs_f64());
    }

    pub(crate) fn slot_busy(&self, busy: Duration) {
        // Whole microseconds: counters are integers.
        self.slot_busy.increment(busy.as_micros() as u64);
    }
}
