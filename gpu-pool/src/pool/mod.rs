//! Level 3: the pool of one device, its tenants, their buffers and leases.

mod buf;
mod config;
mod device;
mod tenant;

pub use buf::PoolBuf;
pub use config::{MemoryShare, PoolConfig, Priority, Share, TenantConfig};
pub use device::GpuPool;
pub use tenant::{Lease, LeasePermit, Tenant, TenantStats};
