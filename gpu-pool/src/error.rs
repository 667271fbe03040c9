//! Small opaque error types. Callers box them as [`tower::BoxError`] and
//! match with `err.is::<QuotaExceeded>()` / `downcast_ref`.

use std::fmt;

/// What was wrong with a configuration value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// An [`AllocatorConfig`](crate::AllocatorConfig) value.
    Allocator,
    /// A memory fraction outside (0, 1], zero bytes, or a non-finite value.
    InvalidMemoryShare,
    /// A compute weight of zero.
    InvalidComputeWeight,
    /// A tenant with zero streams, or more than 64.
    InvalidStreams,
    /// A tenant name that is empty.
    EmptyName,
    /// A tenant name already in use in this pool.
    DuplicateTenant,
    /// Headroom outside (0, 1], zero compute slots, or a zero limit of
    /// waiting slot requests.
    InvalidPool,
}

/// A configuration value was rejected at construction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Which rule was broken.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid gpu pool configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

/// Admission refused: the tenants' memory reservations would sum past the
/// pool budget.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Overcommitted {
    tenants: Vec<String>,
    requested: u64,
    budget: u64,
}

impl Overcommitted {
    pub(crate) fn new(tenants: Vec<String>, requested: u64, budget: u64) -> Self {
        Self {
            tenants,
            requested,
            budget,
        }
    }

    /// The tenants whose reservations together exceed the budget (the one
    /// being admitted last).
    pub fn tenants(&self) -> &[String] {
        &self.tenants
    }

    /// Sum of their reservations, in bytes.
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// The pool budget, in bytes.
    pub fn budget(&self) -> u64 {
        self.budget
    }
}

impl fmt::Display for Overcommitted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "gpu memory over-committed: tenants [{}] reserve {} bytes, pool budget is {} bytes",
            self.tenants.join(", "),
            self.requested,
            self.budget
        )
    }
}

impl std::error::Error for Overcommitted {}

/// An allocation would take a tenant past its memory quota. Nothing was
/// allocated; other tenants are unaffected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaExceeded {
    tenant: String,
    requested: u64,
    used: u64,
    limit: u64,
}

impl QuotaExceeded {
    pub(crate) fn new(tenant: &str, requested: u64, used: u64, limit: u64) -> Self {
        Self {
            tenant: tenant.to_owned(),
            requested,
            used,
            limit,
        }
    }

    /// The tenant that asked.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Bytes the allocation would have consumed (after rounding).
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// Bytes the tenant holds now.
    pub fn used(&self) -> u64 {
        self.used
    }

    /// The tenant's quota.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

impl fmt::Display for QuotaExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {:?} memory quota exceeded: requested {} bytes with {} of {} in use",
            self.tenant, self.requested, self.used, self.limit
        )
    }
}

impl std::error::Error for QuotaExceeded {}

/// The device (or the host backend's capacity) has no room for a new chunk,
/// even after the pool gave its empty cached chunks back. The tenant was
/// within its quota.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceOutOfMemory {
    requested: u64,
    reserved: u64,
}

impl DeviceOutOfMemory {
    pub(crate) fn new(requested: u64, reserved: u64) -> Self {
        Self {
            requested,
            reserved,
        }
    }

    /// Bytes of the chunk that could not be obtained.
    pub fn requested(&self) -> u64 {
        self.requested
    }

    /// Bytes the pool held from the device at that moment.
    pub fn reserved(&self) -> u64 {
        self.reserved
    }
}

impl fmt::Display for DeviceOutOfMemory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "device out of memory: could not reserve a {} byte chunk ({} bytes held by the pool)",
            self.requested, self.reserved
        )
    }
}

impl std::error::Error for DeviceOutOfMemory {}

/// No usable GPU: the CUDA driver library is missing, it reports no device,
/// or the ordinal is out of range.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoGpu {
    reason: String,
}

impl NoGpu {
    #[cfg_attr(not(feature = "cuda"), allow(dead_code))]
    pub(crate) fn new(reason: impl Into<String>) -> Self {
        Self {
            reason: reason.into(),
        }
    }
}

impl fmt::Display for NoGpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "no GPU: {}", self.reason)
    }
}

impl std::error::Error for NoGpu {}

/// A backend call failed (a driver error, an invalid stream).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendError {
    message: String,
    out_of_memory: bool,
}

impl BackendError {
    /// A failure other than running out of memory.
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            out_of_memory: false,
        }
    }

    /// The device could not provide the memory asked for.
    pub fn out_of_memory(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            out_of_memory: true,
        }
    }

    /// Whether this is an out-of-memory condition (the pool then gives
    /// back its empty chunks and retries once).
    pub fn is_out_of_memory(&self) -> bool {
        self.out_of_memory
    }
}

impl fmt::Display for BackendError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "gpu backend error: {}", self.message)
    }
}

impl std::error::Error for BackendError {}

/// Measured device usage of a tenant whose framework allocates on its own
/// (libtorch) is above the footprint it declared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FootprintExceeded {
    tenant: String,
    measured: u64,
    declared: u64,
}

impl FootprintExceeded {
    pub(crate) fn new(tenant: &str, measured: u64, declared: u64) -> Self {
        Self {
            tenant: tenant.to_owned(),
            measured,
            declared,
        }
    }

    /// The tenant (or `"*"` for the device-wide check).
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Measured bytes.
    pub fn measured(&self) -> u64 {
        self.measured
    }

    /// Declared footprint in bytes.
    pub fn declared(&self) -> u64 {
        self.declared
    }
}

impl fmt::Display for FootprintExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {:?} uses {} bytes of device memory outside the pool, above its declared footprint of {}",
            self.tenant, self.measured, self.declared
        )
    }
}

impl std::error::Error for FootprintExceeded {}

/// A compute slot request refused at once: the tenant already has as many
/// requests waiting as
/// [`PoolConfig::max_waiting_acquires`](crate::PoolConfig::max_waiting_acquires)
/// allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WaitQueueFull {
    tenant: String,
    limit: usize,
}

impl WaitQueueFull {
    pub(crate) fn new(tenant: &str, limit: usize) -> Self {
        Self {
            tenant: tenant.to_owned(),
            limit,
        }
    }

    /// The tenant.
    pub fn tenant(&self) -> &str {
        &self.tenant
    }

    /// Requests one tenant may have waiting.
    pub fn limit(&self) -> usize {
        self.limit
    }
}

impl fmt::Display for WaitQueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tenant {:?} already has {} requests waiting for a compute slot",
            self.tenant, self.limit
        )
    }
}

impl std::error::Error for WaitQueueFull {}
