use serde::{Deserialize, Serialize};

use crate::alloc::AllocatorConfig;
use crate::error::{ConfigError, ConfigErrorKind};
use crate::priority::Priority;

/// A tenant's memory quota: a fraction of the pool budget or a byte count.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MemoryShare {
    /// A fraction in (0, 1] of the pool budget (`0.33` = a third).
    Fraction(f64),
    /// An absolute number of bytes (> 0).
    Bytes(u64),
}

/// What a tenant owns of the device.
///
/// ```
/// use convoy_gpu_pool::{Priority, Share};
///
/// let share = Share::fraction(0.33)
///     .compute_weight(2)
///     .priority(Priority::High)
///     .streams(2);
/// assert!(share.validate().is_ok());
/// assert!(Share::fraction(1.5).validate().is_err());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Share {
    /// Memory quota for allocations through the pool (enforced).
    pub memory: MemoryShare,
    /// Weight in the compute gate (≥ 1).
    pub compute_weight: u32,
    /// Stream priority and order among waiting work.
    pub priority: Priority,
    /// Streams created for the tenant (≥ 1); leases rotate over them.
    pub streams: u32,
    /// Device bytes the tenant's framework allocates outside the pool
    /// (libtorch weights + activations); reserved at admission.
    pub external_footprint: u64,
}

impl Default for Share {
    fn default() -> Self {
        Self {
            memory: MemoryShare::Fraction(1.0),
            compute_weight: 1,
            priority: Priority::Normal,
            streams: 1,
            external_footprint: 0,
        }
    }
}

impl Share {
    /// A quota of `fraction` of the pool budget.
    pub fn fraction(fraction: f64) -> Self {
        Self {
            memory: MemoryShare::Fraction(fraction),
            ..Self::default()
        }
    }

    /// A quota of `bytes`.
    pub fn bytes(bytes: u64) -> Self {
        Self {
            memory: MemoryShare::Bytes(bytes),
            ..Self::default()
        }
    }

    /// A tenant whose framework allocates its own device memory (libtorch):
    /// `footprint` bytes are reserved at admission, checked against
    /// measurements with [`Tenant::check_external_usage`](crate::Tenant::check_external_usage),
    /// and a small pool quota (`pool_bytes`, may be 0) covers pool buffers.
    pub fn external(footprint: u64, pool_bytes: u64) -> Self {
        Self {
            memory: MemoryShare::Bytes(pool_bytes),
            external_footprint: footprint,
            ..Self::default()
        }
    }

    /// Sets [`Share::compute_weight`].
    pub fn compute_weight(mut self, weight: u32) -> Self {
        self.compute_weight = weight;
        self
    }

    /// Sets [`Share::priority`].
    pub fn priority(mut self, priority: Priority) -> Self {
        self.priority = priority;
        self
    }

    /// Sets [`Share::streams`].
    pub fn streams(mut self, streams: u32) -> Self {
        self.streams = streams;
        self
    }

    /// Sets [`Share::external_footprint`].
    pub fn external_footprint(mut self, bytes: u64) -> Self {
        self.external_footprint = bytes;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        match self.memory {
            MemoryShare::Fraction(f) if !(f.is_finite() && f > 0.0 && f <= 1.0) => {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidMemoryShare,
                    format!("memory fraction must be in (0, 1], got {f}"),
                ))
            }
            MemoryShare::Bytes(0) if self.external_footprint == 0 => {
                return Err(ConfigError::new(
                    ConfigErrorKind::InvalidMemoryShare,
                    "a tenant needs memory: zero bytes and no external footprint",
                ))
            }
            _ => {}
        }
        if self.compute_weight == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidComputeWeight,
                "compute_weight must be at least 1",
            ));
        }
        if self.streams == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidStreams,
                "a tenant needs at least one stream",
            ));
        }
        if self.streams > 64 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidStreams,
                format!("at most 64 streams per tenant, got {}", self.streams),
            ));
        }
        Ok(())
    }

    /// Quota bytes for a pool budget.
    pub(crate) fn quota_bytes(&self, budget: u64) -> u64 {
        match self.memory {
            MemoryShare::Fraction(f) => (budget as f64 * f).floor() as u64,
            MemoryShare::Bytes(b) => b,
        }
    }
}

/// A named tenant, as found in configuration files.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TenantConfig {
    /// Unique name (used in errors and metric labels).
    pub name: String,
    /// What it owns.
    #[serde(default)]
    pub share: Share,
}

impl TenantConfig {
    /// A tenant config.
    pub fn new(name: impl Into<String>, share: Share) -> Self {
        Self {
            name: name.into(),
            share,
        }
    }
}

/// Settings of a [`GpuPool`](crate::GpuPool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct PoolConfig {
    /// Fraction in (0, 1] of the device's free memory (at pool creation)
    /// that tenants may reserve; the rest absorbs fragmentation and
    /// memory the CUDA context itself needs. Default 0.9.
    pub headroom: f64,
    /// Cap on the budget in bytes (below `free × headroom`), if set.
    pub budget_bytes: Option<u64>,
    /// Execution slots of the compute gate (concurrent leases). Default 4.
    pub compute_slots: u32,
    /// Slot requests one tenant may have waiting at once (≥ 1); more fail
    /// at once with [`WaitQueueFull`](crate::WaitQueueFull). Default 1024.
    pub max_waiting_acquires: usize,
    /// Allocator tuning.
    pub allocator: AllocatorConfig,
    /// Capacity of the host backend [`GpuPool::auto`](crate::GpuPool::auto)
    /// falls back to. Default 1 GiB.
    pub host_capacity: u64,
}

impl Default for PoolConfig {
    fn default() -> Self {
        Self {
            headroom: 0.9,
            budget_bytes: None,
            compute_slots: 4,
            max_waiting_acquires: 1024,
            allocator: AllocatorConfig::default(),
            host_capacity: 1 << 30,
        }
    }
}

impl PoolConfig {
    /// Sets [`PoolConfig::headroom`].
    pub fn headroom(mut self, headroom: f64) -> Self {
        self.headroom = headroom;
        self
    }

    /// Sets [`PoolConfig::budget_bytes`].
    pub fn budget_bytes(mut self, bytes: u64) -> Self {
        self.budget_bytes = Some(bytes);
        self
    }

    /// Sets [`PoolConfig::compute_slots`].
    pub fn compute_slots(mut self, slots: u32) -> Self {
        self.compute_slots = slots;
        self
    }

    /// Sets [`PoolConfig::max_waiting_acquires`].
    pub fn max_waiting_acquires(mut self, n: usize) -> Self {
        self.max_waiting_acquires = n;
        self
    }

    /// Sets [`PoolConfig::allocator`].
    pub fn allocator(mut self, allocator: AllocatorConfig) -> Self {
        self.allocator = allocator;
        self
    }

    /// Sets [`PoolConfig::host_capacity`].
    pub fn host_capacity(mut self, bytes: u64) -> Self {
        self.host_capacity = bytes;
        self
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !(self.headroom.is_finite() && self.headroom > 0.0 && self.headroom <= 1.0) {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidPool,
                format!("headroom must be in (0, 1], got {}", self.headroom),
            ));
        }
        if self.compute_slots == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidPool,
                "compute_slots must be at least 1",
            ));
        }
        if self.max_waiting_acquires == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidPool,
                "max_waiting_acquires must be at least 1",
            ));
        }
        self.allocator.validate()
    }
}
