//! Weighted traffic split, sticky canaries, shadow traffic, automated
//! rollouts and replica balancing, as tower services.
//!
//! * [`Split`]: N named backends with weights, smooth weighted round-robin
//!   (within one request of target at every prefix for two backends) or
//!   weighted random, sticky keys with minimal
//!   movement, header/predicate overrides, live weight updates through a
//!   [`SplitHandle`], per-backend metrics and snapshots ([`split`] module).
//! * [`Shadow`]: mirrors a fraction of requests to a shadow backend on a
//!   spawned task, with bounded in-flight shadows and a comparison hook
//!   ([`shadow`] module).
//! * [`Rollout`]: a progressive canary controller: weight steps, analysis of
//!   error rate and latency against thresholds or the stable version,
//!   prediction drift between the canary's and the stable's outputs on the
//!   same traffic ([`rollout::drift`]), minimum sample counts, automatic
//!   promotion or ramped rollback, manual pause/resume/abort/promote and an
//!   event stream ([`rollout`] module).
//! * [`Balancer`]: power-of-two-choices over any `Discover` stream of
//!   replicas, `Clone`, failing fast with [`NoReadyReplica`] instead of
//!   pending forever ([`balance`] module).
//!
//! # Example
//!
//! ```
//! use convoy_router::{Split, StickyStrategy};
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let backend = |v: &'static str| service_fn(move |user: u64| async move { Ok::<_, BoxError>((v, user)) });
//! let (split, handle) = Split::builder()
//!     .backend("stable", backend("stable"), 95.0)
//!     .backend("canary", backend("canary"), 5.0)
//!     .sticky_by(|user: &u64| Some(*user))
//!     .sticky_strategy(StickyStrategy::Intervals)
//!     .build()?;
//!
//! let (first, _) = split.clone().oneshot(42).await?;
//! // The same user always lands on the same version.
//! for _ in 0..10 {
//!     assert_eq!(split.clone().oneshot(42).await?.0, first);
//! }
//! // Raising the canary moves only stable users to the canary.
//! handle.set_weights([("stable", 90.0), ("canary", 10.0)])?;
//! if first == "canary" {
//!     assert_eq!(split.clone().oneshot(42).await?.0, "canary");
//! }
//! # Ok(())
//! # }
//! ```

// The README's example is compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod balance;
mod error;
mod hash;
pub mod rollout;
pub mod shadow;
pub mod split;
pub mod stats;

pub use balance::{Balancer, NoReadyReplica};
pub use error::{ConfigError, ConfigErrorKind};
pub use hash::{KeyHasher, StickyKey};
pub use rollout::{Rollout, RolloutConfig, RolloutHandle};
pub use shadow::{Shadow, ShadowLayer};

pub use split::{
    PickStrategy, Split, SplitBuilder, SplitConfig, SplitHandle, StickyStrategy, WhenNotReady,
};
pub use stats::{BackendSnapshot, SplitSnapshot};
