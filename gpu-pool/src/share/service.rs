use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tower::{BoxError, Service};

use super::future::ResponseFuture;
use crate::gate::{Acquire, SlotPermit};
use crate::pool::{Lease, Tenant};

/// A request that can carry a [`Lease`].
pub trait LeaseCarrier {
    /// Attaches the lease the request runs under.
    fn attach_lease(&mut self, lease: Lease);
}

#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
impl<B> LeaseCarrier for http::Request<B> {
    fn attach_lease(&mut self, lease: Lease) {
        self.extensions_mut().insert(lease);
    }
}

/// A request of any type with a lease slot, for services whose request type
/// has no extensions (a batch `Vec<T>`, a tuple).
#[derive(Debug, Clone)]
pub struct Leased<T> {
    /// The request.
    pub request: T,
    lease: Option<Lease>,
}

impl<T> Leased<T> {
    /// Wraps a request; [`GpuShare`] fills in the lease.
    pub fn new(request: T) -> Self {
        Self {
            request,
            lease: None,
        }
    }

    /// The lease, once attached.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }

    /// The request and its lease.
    pub fn into_parts(self) -> (T, Option<Lease>) {
        (self.request, self.lease)
    }
}

impl<T> LeaseCarrier for Leased<T> {
    fn attach_lease(&mut self, lease: Lease) {
        self.lease = Some(lease);
    }
}

/// The service made by [`GpuShareLayer`](crate::GpuShareLayer).
///
/// `poll_ready` waits for a compute slot of the tenant, then for the inner
/// service. Clones start without a slot.
pub struct GpuShare<S> {
    inner: S,
    tenant: Tenant,
    acquiring: Option<Acquire>,
    permit: Option<SlotPermit>,
}

impl<S> GpuShare<S> {
    /// Wraps `inner`, leasing from `tenant`.
    pub fn new(inner: S, tenant: Tenant) -> Self {
        Self {
            inner,
            tenant,
            acquiring: None,
            permit: None,
        }
    }

    /// The inner service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S: Clone> Clone for GpuShare<S> {
    fn clone(&self) -> Self {
        // The slot belongs to the original's next call, never to a clone.
        Self::new(self.inner.clone(), self.tenant.clone())
    }
}

impl<S: fmt::Debug> fmt::Debug for GpuShare<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GpuShare")
            .field("inner", &self.inner)
            .field("tenant", &self.tenant.name())
            .field("holds_slot", &self.permit.is_some())
            .finish()
    }
}

impl<S, Req> Service<Req> for GpuShare<S>
where
    S: Service<Req>,
    S::Error: Into<BoxError>,
    Req: LeaseCarrier,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.permit.is_none() {
            let tenant = &self.tenant;
            let acquiring = self.acquiring.get_or_insert_with(|| tenant.acquire_slot());
            let permit = ready!(Pin::new(acquiring).poll(cx));
            self.acquiring = None;
            self.permit = Some(permit?);
        }
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, mut req: Req) -> Self::Future {
        let permit = self.permit.take().expect("poll_ready must be called first");
        req.attach_lease(self.tenant.lease_for_slot());
        ResponseFuture::new(self.inner.call(req), permit)
    }
}
