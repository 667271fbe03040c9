//! Rolling a new version out beside the serving one: the new version gets
//! its own replicas, batchers and tenant, a convoy-router [`Rollout`](convoy_router::Rollout) moves
//! the split's weights through the deployment's steps while it analyses
//! the canary's errors and latency and, with `[deployment.rollout.drift]`,
//! its predictions against the stable version's on the same requests (a
//! share of the canary's requests is mirrored to the stable version through
//! convoy-router's [`ShadowLayer`](convoy_router::shadow::ShadowLayer), off the request path, and each answered
//! pair goes to a [`DriftMonitor`](convoy_router::rollout::drift::DriftMonitor)). Promoted: the old version is drained
//! and retired. Rolled back: the new one is.
//!
//! What a rollout shows ([`Status`], [`RolloutInfo`], [`RolloutSummary`])
//! is kept by the deployment (`crate::deploy`, re-exported here): this
//! module builds on `crate::deploy`, never the other way round.

mod canary;
mod mirror;

pub(crate) use self::canary::roll_out;
pub use crate::deploy::{RolloutEventInfo, RolloutInfo, RolloutSummary, Status};
