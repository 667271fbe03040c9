use tower::Layer;

use super::service::GpuShare;
use crate::pool::Tenant;

/// Wraps a service so every call holds a lease (stream + compute slot) of
/// `tenant`.
#[derive(Debug, Clone)]
pub struct GpuShareLayer {
    tenant: Tenant,
}

impl GpuShareLayer {
    /// A layer leasing from `tenant`.
    pub fn new(tenant: Tenant) -> Self {
        Self { tenant }
    }
}

impl<S> Layer<S> for GpuShareLayer {
    type Service = GpuShare<S>;

    fn layer(&self, inner: S) -> GpuShare<S> {
        GpuShare::new(inner, self.tenant.clone())
    }
}
