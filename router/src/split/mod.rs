//! Weighted, sticky and overridable traffic split over named backends.
//!
//! # Picking
//!
//! * **Smooth weighted round-robin** (default, nginx's algorithm): weights
//!   are compiled into one period of the smooth sequence and a shared atomic
//!   cursor walks it, so all clones of a split together produce the exact
//!   sequence. With two backends the observed count of each backend stays
//!   within one request of `n · weight / total` after every `n` requests
//!   (i.i.d. random at 5 % gives anywhere from 1 to 10 canary requests per
//!   100). With more backends the deviation stays below 1.5 requests (the
//!   property tests check both). Integral weights that sum to at most 10,000
//!   are used exactly; other weights are apportioned onto 10,000 slots.
//! * **Weighted random** ([`PickStrategy::WeightedRandom`]) is available for
//!   users who want independent picks.
//! * **Sticky** ([`SplitBuilder::sticky_by`], [`SplitBuilder::sticky_header`]):
//!   a key's stable 64-bit hash selects one of 65,536 buckets; buckets map
//!   to backends by cumulative intervals (two backends: moving the canary
//!   from 5 % to 10 % moves exactly the keys of 5 % of the buckets, all from
//!   stable to canary) or by weighted rendezvous hashing (N backends: when
//!   one weight changes, keys move only to or from that backend).
//!   Requests without a key are split by weight. Snapshots report the share
//!   of requests and the (HyperLogLog-estimated) share of distinct keys.
//! * **Overrides** ([`SplitBuilder::override_header`],
//!   [`SplitBuilder::override_when`], [`Override`]) always win, even over a
//!   zero weight, and never change the split seen by everyone else.
//!
//! A zero-weight backend receives nothing except overridden requests.
//! Weights are validated when the split is built or updated: negative, NaN,
//! infinite or all-zero weights are a [`ConfigError`](crate::ConfigError).
//!
//! # Readiness
//!
//! Like linkerd's `distribute`, and unlike `tower::steer::Steer` (which
//! waits for *every* backend), `poll_ready` picks first and then polls only
//! the picked backend. If it is not ready, [`WhenNotReady::Wait`] keeps
//! waiting for it (the next `poll_ready` re-polls the same pick, so the
//! sequence is not skipped), while [`WhenNotReady::Spill`] tries the other
//! non-zero-weight backends, heaviest first, and counts the request in
//! `convoy_router_spillover_total` of the backend it was picked for, so
//! reported splits stay honest.
//!
//! When a sticky key extractor is set, the pick depends on the request, so
//! `poll_ready` returns ready at once and the response future drives the
//! readiness of the picked backend alone (like `ServiceExt::oneshot`);
//! sticky and overridden requests always wait for their backend.
//!
//! Errors are the backends' own: `Split`'s error type is the backends'
//! error type, passed through unchanged.
//!
//! # Clones, backends and live updates
//!
//! Backends must be `Clone`. Every clone of a `Split` shares the routing
//! table, the round-robin cursor and the statistics through an `Arc`, and
//! owns its own backend instances, cloned lazily from the prototypes given
//! to the builder: a clone never copies readiness. Backends that are not
//! `Clone`, or that should share one queue, go behind
//! [`tower::buffer::Buffer`], which is `Clone` and whose clones each
//! reserve their own slot.
//!
//! A [`SplitHandle`] changes weights and adds or removes backends at run
//! time: the new table is swapped in and every clone picks it up before its
//! next pick (an epoch check, one atomic load per request). Futures already
//! returned keep running against the backend they were sent to.
//!
//! # Example
//!
//! ```
//! use convoy_router::{Split, WhenNotReady};
//! use tower::{service_fn, BoxError, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let version = |v: &'static str| {
//!     service_fn(move |x: u32| async move { Ok::<_, BoxError>(format!("{v}:{x}")) })
//! };
//! let (split, handle) = Split::builder()
//!     .name("model")
//!     .backend("v1", version("v1"), 90.0)
//!     .backend("v2", version("v2"), 10.0)
//!     .when_not_ready(WhenNotReady::Spill)
//!     .override_when(|x: &u32| *x == 7, "v2")
//!     .build()?;
//!
//! let mut v2_count = 0;
//! for x in 0..100 {
//!     if split.clone().oneshot(x).await?.starts_with("v2") {
//!         v2_count += 1;
//!     }
//! }
//! assert_eq!(v2_count, 11); // 10 by weight, exactly, plus the override
//!
//! handle.set_weights([("v1", 50.0), ("v2", 50.0)])?;
//! assert_eq!(handle.snapshot().backend("v2").unwrap().requests, 11);
//! # Ok(())
//! # }
//! ```

mod config;
mod future;
mod handle;
mod instances;
mod overrides;
mod service;
mod table;

pub use config::{PickStrategy, SplitConfig, StickyStrategy, WhenNotReady};
pub use future::ResponseFuture;
pub use handle::SplitHandle;
pub use overrides::{HeaderOverride, Override, PredicateOverride};
pub use service::{Split, SplitBuilder, UNKNOWN_OVERRIDE_TOTAL};
