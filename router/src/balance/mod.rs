//! Power-of-two-choices balancing over a version's replicas.
//!
//! [`Balancer`] wraps `tower::balance::p2c::Balance` over any
//! [`Discover`](tower::discover::Discover) stream (convoy-autoscale's
//! replica set provides one; so does any `Stream` of
//! [`Change`](tower::discover::Change)s), with a load estimate per replica:
//! peak EWMA of latency with a default-RTT floor for new replicas, or the
//! number of pending requests. It adds two things tower's `Balance` lacks:
//!
//! * it is `Clone` (the balancer runs behind a `tower::buffer::Buffer`
//!   worker), so it can sit inside an axum router;
//! * it fails fast: when no replica becomes ready within
//!   [`BalanceConfig::ready_timeout`], requests fail with [`NoReadyReplica`]
//!   instead of pending forever, and keep failing at once until a replica
//!   is ready again.
//!
//! # Example
//!
//! ```
//! use convoy_router::balance::{BalanceConfig, Balancer};
//! use convoy_router::NoReadyReplica;
//! use futures::stream;
//! use tower::discover::Change;
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let replica = |id: u32| service_fn(move |x: u32| async move { Ok::<_, BoxError>((id, x)) });
//! let replicas = stream::iter((0..3).map(move |id| Ok::<_, BoxError>(Change::Insert(id, replica(id)))));
//! let balancer = Balancer::new(replicas, BalanceConfig::default())?;
//! let (_replica, x) = balancer.clone().oneshot(7).await?;
//! assert_eq!(x, 7);
//! # Ok(())
//! # }
//! ```

mod config;
mod error;
mod fail_fast;
mod service;

pub use config::{BalanceConfig, LoadMetric};
pub use error::NoReadyReplica;
pub use service::Balancer;
