//! convoy-remote: replicas on other machines, discovered and balanced by
//! convoy.
//!
//! * [`Endpoint`] (`id`, `addr`, `version`, `state: Ready | Draining`) and
//!   [`Change`]: what a discovery mechanism announces.
//! * [`EndpointSource`]: anything that yields a stream of changes
//!   ([`source`] module): a [`StaticSource`] list, endpoints registered in
//!   etcd under a lease (feature `etcd`).
//! * [`Connect`]: an endpoint's client service; [`HttpConnector`] forwards
//!   KServe v2 REST (HTTP/1.1) or gRPC (HTTP/2) requests with hyper
//!   ([`connect`] module).
//! * [`Pool`]: one convoy-router `Balancer` per model version over a
//!   source's endpoints, with outlier ejection (consecutive failures or a
//!   failed [`Probe`]), re-insertion by a passing probe, and draining
//!   ([`pool`] module).
//! * [`NeverSentPolicy`]: retries only requests that never reached an
//!   endpoint, within tower's retry budget ([`retry`] module).
//! * [`MetricsScraper`]: convoy-autoscale's `SignalSource` read from the
//!   replicas' `/metrics` directly ([`scrape`] module).
//!
//! No Kubernetes dependency: `convoy-kube` implements [`EndpointSource`]
//! over EndpointSlices.
//!
//! # Example
//!
//! ```
//! use convoy_remote::{Change, Endpoint, EndpointSource, StaticSource};
//! use futures::StreamExt;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let node = Endpoint::ready("node-1", "10.0.0.1:8080".parse().unwrap(), "2");
//! let mut changes = StaticSource::new([node.clone()]).changes();
//! assert_eq!(changes.next().await.unwrap().unwrap(), Change::Insert(node));
//! # }
//! ```

// The README's example is compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

pub mod connect;
mod endpoint;
mod error;
pub mod pool;
pub mod retry;
pub mod scrape;
pub mod source;

pub use crate::connect::{Connect, HttpConnector, HttpEndpoint, HttpProbe, NotSent};
pub use crate::error::ConfigError;
pub use crate::pool::{EndpointStatus, Pool, PoolConfig, Probe, Tracked};
pub use crate::retry::{NeverSentPolicy, RetryConfig};
pub use crate::scrape::{MetricsScraper, ScrapeConfig};

pub use crate::endpoint::{Change, Endpoint, EndpointState, EndpointTable};
pub use crate::source::{ChangeStream, EndpointSource, SourceError, StaticHandle, StaticSource};
