//! Shadow traffic: mirror a fraction of requests to a shadow backend,
//! fire-and-forget.
//!
//! The primary path never waits for the shadow: the copy is sent from a
//! spawned task, the number of shadow requests in flight is bounded by a
//! semaphore taken with `try_acquire` (a mirror that finds no permit is
//! dropped and counted, never queued), and shadow errors,
//! timeouts and slowness stay inside that task. The shadow's response is
//! discarded, or handed to a [`Compare`] hook together with what the hook
//! kept of the primary's result.
//!
//! # Request bodies
//!
//! Mirroring needs a copy of the request. [`ShadowLayer::new`] requires
//! `Req: Clone`; [`ShadowLayer::with_cloner`] takes any copy function.
//! `http::Request` is not `Clone`: buffer the body into `Bytes` (or any
//! `Clone` body) first, then use [`clone_http_request`], which copies
//! method, URI, version, headers and body (extensions are not copied).
//! Streaming bodies cannot be mirrored without buffering them.
//!
//! # Example
//!
//! ```
//! use convoy_router::shadow::{CompareFn, ShadowConfig, ShadowError, ShadowLayer};
//! use tower::{service_fn, BoxError, Layer, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let stable = service_fn(|x: u32| async move { Ok::<_, BoxError>(x * 2) });
//! let candidate = service_fn(|x: u32| async move { Ok::<_, BoxError>(x + x) });
//! let config = ShadowConfig { fraction: 0.25, max_in_flight: 8, ..ShadowConfig::default() };
//! let layer = ShadowLayer::new(candidate, config)?.compare(CompareFn::new(
//!     |primary: Result<u32, String>, shadow: Result<u32, ShadowError>| {
//!         assert_eq!(primary.ok(), shadow.ok());
//!     },
//! ));
//! let svc = layer.layer(stable);
//! for x in 0..8 {
//!     assert_eq!(svc.clone().oneshot(x).await?, x * 2);
//! }
//! assert_eq!(layer.stats().mirrored, 2);
//! # Ok(())
//! # }
//! ```

mod compare;
mod future;
mod layer;
mod service;
mod shared;

pub use compare::{Compare, CompareFn, Discard, ShadowError};
pub use future::ResponseFuture;
pub use layer::{clone_http_request, ShadowLayer};
pub use service::Shadow;
pub use shared::{ShadowConfig, ShadowStats, SHADOW_TOTAL};
