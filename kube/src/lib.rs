//! convoy on Kubernetes: the parts of a cluster convoy talks to.
//!
//! * [`KubeScaler`] is convoy-autoscale's
//!   [`Scaler`](convoy_autoscale::Scaler) for a Deployment through its
//!   `scale` subresource; it marks the least-loaded pods with
//!   [`POD_DELETION_COST`] before a scale-down and never scales down on
//!   stale data.
//! * [`EndpointSliceSource`] is convoy-remote's
//!   [`EndpointSource`](convoy_remote::EndpointSource) over a Service's
//!   EndpointSlices (ready → `Ready`, terminating but serving → `Draining`,
//!   otherwise removed), watched with bookmarks, re-listed on 410 Gone.
//! * [`LeaderElector`] runs a `coordination.k8s.io/v1` Lease election so one
//!   autoscaler of a Deployment writes; [`KubeScaler::leader`] guards its
//!   writes with the [`LeaderHandle`].
//! * With feature `keda`, the `keda` module serves KEDA's external scaler gRPC
//!   interface with convoy's load signal, for clusters that scale with KEDA.
//! * [`API_CALLS`] lists every call this crate makes, in RBAC's terms; the
//!   Role in `deploy/kubernetes/` grants exactly these (a test checks it).
//!
//! When the API server cannot be reached every component keeps its last
//! snapshot, refuses writes with a typed [`Error`] ([`ErrorKind::Unreachable`],
//! [`ErrorKind::Stale`]) and reports [`ApiHealth`].
//!
//! # Example
//!
//! The autoscaler of a front: its replicas are the Ready endpoints of the
//! node Service, its writes go to the node Deployment while it holds the
//! Lease.
//!
//! ```no_run
//! use std::time::Duration;
//! use convoy_autoscale::{Autoscaler, Engine, EngineConfig, TargetOngoing, TargetOngoingConfig};
//! use convoy_kube::{EndpointSliceSource, KubeScaler, LeaderConfig, LeaderElector};
//! use convoy_remote::EndpointSource;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let client = kube::Client::try_default().await?;
//! let elector = LeaderElector::new(
//!     client.clone(),
//!     LeaderConfig::new("convoy", "convoy-node-autoscaler", std::env::var("POD_NAME")?),
//! )?;
//! let source = EndpointSliceSource::new(client.clone(), "convoy", "convoy-node", "v1")?.port_name("http");
//! let ready = source.status();
//! let scaler = KubeScaler::new(client, "convoy", "convoy-node")?
//!     .leader(elector.handle())
//!     .ready_count(move || ready.listed().then(|| ready.ready()));
//! scaler.refresh().await?;
//!
//! tokio::spawn(elector.run());
//! let changes = source.changes(); // feed a convoy-router Balancer
//! # drop(changes);
//! let policy = TargetOngoing::new(TargetOngoingConfig::default().target_ongoing_requests(4.0))?;
//! let engine = Engine::new(EngineConfig::default().min_replicas(1).max_replicas(8), Box::new(policy))?;
//! let autoscaler = Autoscaler::new(engine, scaler);
//! tokio::spawn(autoscaler.run());
//! # let _ = Duration::ZERO;
//! # Ok(())
//! # }
//! ```

// The README's examples, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

mod calls;
mod endpoint_slice;
mod error;
mod health;
#[cfg(feature = "keda")]
pub mod keda;
mod leader;
mod scaler;

pub use calls::{ApiCall, API_CALLS};
pub use endpoint_slice::{
    slice_endpoints, EndpointSliceSource, SliceSourceStatus, SERVICE_NAME_LABEL,
};
pub use error::{Error, ErrorKind};
pub use health::ApiHealth;
pub use leader::{LeaderConfig, LeaderElector, LeaderHandle, Role};
pub use scaler::{
    KubeScaler, PodLoad, PodLoadSnapshot, ReadyCount, ScaleOutcome, ScaleSnapshot,
    POD_DELETION_COST,
};

pub use k8s_openapi;
pub use kube;
