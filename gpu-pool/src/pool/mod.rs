//! Level 4: the pool of one device, its tenants, their buffers and leases.

mod account;
mod buf;
mod config;
mod device;
mod tenant;

pub use buf::PoolBuf;
pub use config::{MemoryShare, PoolConfig, Share, TenantConfig};
pub use device::GpuPool;
pub use tenant::{Lease, LeasePermit, Tenant, TenantStats};
