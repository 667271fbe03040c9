//! Tower integration: [`GpuShareLayer`] leases a stream and a compute slot
//! of a tenant for each request (or batch).
//!
//! The slot is acquired in `poll_ready`, so a tenant over its compute share
//! sees backpressure, not a queue; the [`Lease`](crate::Lease) is attached to
//! the request (an `http::Request` extension with the `http` feature, or [`Leased`]) and the slot is
//! released when the response future completes or is dropped.
//!
//! Wrapping a batch-level service (as convoy-batcher's `BatchLayer` calls
//! it) gives one lease per batch:
//!
//! ```
//! use convoy_gpu_pool::{GpuPool, GpuShareLayer, HostBackend, Leased, PoolConfig, Share};
//! use tower::{service_fn, Service, ServiceBuilder, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! let pool = GpuPool::new(HostBackend::default(), PoolConfig::default())?;
//! let bert = pool.tenant("bert", Share::fraction(0.5).streams(2))?;
//!
//! let model = service_fn(|batch: Leased<Vec<String>>| async move {
//!     let stream = batch.lease().expect("leased").stream();
//!     Ok::<_, tower::BoxError>(format!("{} items on {stream}", batch.request.len()))
//! });
//! let mut svc = ServiceBuilder::new()
//!     .map_request(Leased::new)
//!     .layer(GpuShareLayer::new(bert))
//!     .service(model);
//! let out = svc.ready().await?.call(vec!["a".into(), "b".into()]).await?;
//! assert_eq!(out, "2 items on stream#0");
//! # Ok(()) }
//! ```

mod future;
mod layer;
mod service;

pub use future::ResponseFuture;
pub use layer::GpuShareLayer;
pub use service::{GpuShare, LeaseCarrier, Leased};
