//! convoy-autoscale: a pluggable autoscaling policy engine.
//!
//! - [`signal`]: [`LoadSample`]s (ongoing = queued + running, arrivals,
//!   completions, latency quantiles, batch statistics), the look-back
//!   [`Window`] that aggregates them on a clock the simulator can drive, and
//!   [`LoadObserver`], which measures them in front of a deployment.
//! - [`policy`]: the [`Policy`] trait (a pure decision from the window) and
//!   the built-ins: [`TargetOngoing`] (Ray Serve), [`Hpa`] (Kubernetes),
//!   [`Kpa`] (Knative, with panic mode), [`LatencySlo`], [`QueueModel`],
//!   and the [`Max`] / [`Min`] combinators.
//! - [`engine`]: the [`Engine`] applies bounds, initial replicas, delays in
//!   time, step limits, scale-down stabilization, scale-to-zero and cold-start
//!   awareness; the [`Autoscaler`] drives it on the tokio clock against a
//!   [`Scaler`].
//! - [`replica_set`]: [`ReplicaSet`], an in-process [`Scaler`] of tower
//!   services exposed as a `tower::discover::Discover` stream for a balancer.
//!
//! The deterministic simulator that replays load traces against these
//! policies is the `convoy-autoscale-sim` crate, so a server links no
//! simulator.
//!
//! Time is a [`Duration`](std::time::Duration) since an arbitrary epoch
//! everywhere, so the same engine runs live and in simulated time.
//!
//! # Example
//!
//! ```
//! use std::time::Duration;
//! use convoy_autoscale::{
//!     Engine, EngineConfig, LoadSample, ReplicaCounts, TargetOngoing, TargetOngoingConfig,
//! };
//!
//! # fn main() -> Result<(), convoy_autoscale::ConfigError> {
//! // Ray Serve semantics: 2 ongoing requests per replica, scale up after 30 s.
//! let policy = TargetOngoing::new(TargetOngoingConfig::default().target_ongoing_requests(2.0))?;
//! let mut engine = Engine::new(EngineConfig::default().min_replicas(1).max_replicas(20), Box::new(policy))?;
//!
//! let mut replicas = ReplicaCounts::ready(2);
//! for second in 0..=30 {
//!     let now = Duration::from_secs(second);
//!     engine.record(now, LoadSample::ongoing(10.0)); // 10 requests in flight
//!     let decision = engine.evaluate(now, replicas);
//!     replicas = ReplicaCounts::ready(decision.desired);
//! }
//! assert_eq!(replicas.current, 5);
//! # Ok(())
//! # }
//! ```

// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod engine;
mod error;
pub mod policy;
pub mod replica_set;
pub mod signal;

pub use crate::engine::{
    Autoscaler, AutoscalerHandle, Engine, EngineConfig, ReplicaCounts, ScaleDecision, Scaler,
};
pub use crate::error::{ConfigError, ConfigErrorKind};
pub use crate::policy::{
    Adaptive, AdaptiveConfig, Hpa, HpaConfig, HpaRule, HpaRuleKind, HpaScalingRules, HpaTarget,
    Kpa, KpaConfig, KpaMetric, LatencySlo, LatencySloConfig, Max, Min, Policy, PolicyInput,
    QueueModel, QueueModelConfig, Reason, Recommendation, SelectPolicy, TargetOngoing,
    TargetOngoingConfig,
};
pub use crate::replica_set::{Replica, ReplicaId, ReplicaSet, ReplicaSetConfig};
pub use crate::signal::{
    BatchCost, Counter, Layered, LoadObserver, LoadSample, ObserveLayer, Signal, SignalSource,
    Window, WindowView,
};
#[cfg(feature = "batcher")]
pub use crate::signal::{BatcherSet, BatcherSource};
