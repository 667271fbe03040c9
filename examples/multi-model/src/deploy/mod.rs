//! One deployment: every request takes the same path through the four
//! convoy crates, and no path goes around them.
//!
//! ```text
//! Deployment::call (the one entry point of v1, v2 REST and v2 gRPC:
//!                   pinned version, sticky key, the earlier of the
//!                   caller's deadline and the request timeout)
//!   ─► convoy-router Split (versions by weight, sticky key, pinned version;
//!                      a Rollout moves the weights)
//!   ─► per version: Step (the request's pre-processing by this version's
//!      manifest, its contract, then post-processing by the same manifest)
//!   ─► Counted (requests, errors, latency per model/version)
//!   ─► convoy-autoscale LoadObserver (the latency callers feel)
//!   ─► convoy-router Balancer (p2c over the version's ready replicas)
//!   ─► convoy-autoscale ReplicaSet (autoscaled by LatencySlo, TargetOngoing
//!      or Adaptive)
//!   ─► per replica: convoy-batcher Batch (keyed by sequence-length bucket
//!      for text, cost = rows, deadline = the request's)
//!   ─► convoy-gpu-pool: the version's tenant lease for every batch
//!   ─► Forward (the model version, shared by its replicas)
//! ```
//!
//! The files, lowest first: [`Item`] and [`Answer`] (what travels to the
//! model), [`Route`] (how a caller routes a request), [`Counted`]
//! (per-version metrics), the stack of one version (replica batcher,
//! autoscaling policy, device share), [`Version`], the per-version step
//! ([`Task`], [`Call`], [`Reply`]), [`Status`] (what a deployment shows of
//! its rollout and registry), and [`Deployment`]. `crate::rollout` builds
//! on this module; nothing here uses it.

mod counted;
mod deployment;
mod item;
mod route;
mod stack;
mod status;
mod step;
mod version;

pub use self::counted::Counted;
pub use self::deployment::{rollout_config, Deployment, Served};
pub use self::item::{length_key, Answer, Item};
pub use self::route::{NoSuchVersion, Route, TimedOut};
pub use self::stack::{
    batch_config, engine_config, host_quota, model_share, model_tenant, policy, wants_gpu, Backend,
    Replica, VersionService,
};
pub use self::status::{RolloutEventInfo, RolloutInfo, RolloutSummary, Status};
pub use self::step::{Call, ItemService, Prepared, Reply, Task, Tensors};
pub use self::version::{BatchTotals, Version};
