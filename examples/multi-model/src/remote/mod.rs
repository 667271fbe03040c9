//! The server past one machine (convoy-remote): a **node** registers itself
//! in etcd and drains on SIGTERM; a **front** balances requests over remote
//! nodes (a static list or etcd) without loading any model.
//!
//! * Node: [`NodeOptions`] and [`Node`]: after the server listens, its
//!   endpoint is written under an etcd lease kept alive in the background
//!   (a killed node disappears when the lease expires). On SIGTERM,
//!   [`Node::drain`] marks it draining and revokes the lease first (fronts
//!   stop sending new requests), waits `drain_grace` for the fronts to see
//!   it, and only then does the server stop accepting and finish the
//!   requests it admitted. Every request in flight is counted in the
//!   `convoy_node_in_flight_requests` gauge ([`count_in_flight`]), which a
//!   front's autoscaler reads straight from `/metrics`.
//! * Front: [`Front`]: per deployment, a convoy-router `Split` (and its
//!   `Rollout`, when the configuration plans one) over one convoy-remote
//!   balancer (power of two choices) per version's node group, with
//!   outlier ejection, health probes on `/v2/health/ready`, draining, and
//!   retries of requests that were never sent; a version without a ready
//!   node holds requests in a bounded cold-start queue ([`cold`]) while
//!   its autoscaler (`scale`: the nodes' `/metrics` → convoy-autoscale
//!   → a `Scaler`) asks for one. Configured by the server's TOML
//!   (`[deployment.remote]`, [`Front::from_config`]) or, for one version,
//!   by the command line ([`FrontOptions`]). Every request (v1, v2 REST)
//!   is forwarded whole to the deployment its path names, pinned by
//!   `x-convoy-version` or a v2 path's version, and its answer says the
//!   version in `x-convoy-version`; with `grpc_nodes` (or `[server]
//!   grpc_addr` in the configuration: routed by the model and version the
//!   request message names) every KServe v2 gRPC call on a second listener
//!   ([`Front::grpc_router`]: HTTP/2 to the nodes' gRPC services, statuses
//!   and trailers passed through; a node registers its gRPC address as
//!   endpoint `ID/grpc` of version `VERSION/grpc`);
//!   `GET /front/endpoints` lists the nodes and their state, `GET
//!   /front/deployments` the versions' weights, serving nodes, waiting
//!   requests and desired nodes. No ready node within the wait: 503 with
//!   `Retry-After`; no answer within `request_timeout`: 504.

pub mod cold;
mod front;
mod grpc;
mod kube;
mod scale;

pub use self::cold::{ColdStart, NoNode, NodeFailed};
pub use self::front::{Front, FrontOptions, Nodes, RemoteDeployment, Scalers, VersionClient};

use std::net::SocketAddr;
use std::time::Duration;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use convoy_remote::source::etcd::{EtcdConfig, Registration};
use convoy_remote::{Endpoint, EndpointState};
use tower::BoxError;

/// The binaries' log: `RUST_LOG` (default `info`) to stderr, so stdout
/// carries only the address lines a supervisor reads.
pub fn log_to_stderr() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
}

/// Gauge: requests being served by this node (queued or running).
pub const IN_FLIGHT: &str = "convoy_node_in_flight_requests";

/// Counts a request in [`IN_FLIGHT`] until its response is produced (an
/// axum middleware, `axum::middleware::from_fn(count_in_flight)`).
pub async fn count_in_flight(req: Request, next: Next) -> Response {
    struct Guard(metrics::Gauge);
    impl Drop for Guard {
        fn drop(&mut self) {
            self.0.decrement(1.0);
        }
    }
    let gauge = metrics::gauge!(IN_FLIGHT);
    gauge.increment(1.0);
    let _guard = Guard(gauge);
    next.run(req).await
}

/// How a node announces itself.
#[derive(Debug, Clone)]
pub struct NodeOptions {
    /// etcd client URL.
    pub etcd: String,
    /// Key prefix the fronts watch.
    pub prefix: String,
    /// Stable id of this node.
    pub id: String,
    /// Address fronts reach this node at.
    pub advertise: SocketAddr,
    /// Address fronts reach its gRPC service at, registered as endpoint
    /// `ID/grpc` of version `VERSION/grpc`.
    pub grpc_advertise: Option<SocketAddr>,
    /// The model version it serves.
    pub version: String,
    /// Lease TTL: how long a killed node stays listed.
    pub ttl: Duration,
    /// Wait between deregistering and closing the listener, for the fronts
    /// to see the node go.
    pub drain_grace: Duration,
}

/// A registered node.
#[derive(Debug)]
pub struct Node {
    registrations: Vec<Registration>,
    drain_grace: Duration,
}

impl Node {
    /// Registers the node in etcd under a kept-alive lease.
    pub async fn register(options: &NodeOptions) -> Result<Self, BoxError> {
        let config = EtcdConfig::new(options.etcd.clone(), options.prefix.clone());
        let endpoint = Endpoint::ready(
            options.id.clone(),
            options.advertise,
            options.version.clone(),
        );
        let mut registrations = vec![Registration::register(&config, endpoint, options.ttl).await?];
        if let Some(grpc) = options.grpc_advertise {
            let endpoint = Endpoint::ready(
                format!("{}/grpc", options.id),
                grpc,
                format!("{}/grpc", options.version),
            );
            registrations.push(Registration::register(&config, endpoint, options.ttl).await?);
        }
        tracing::info!(id = %options.id, advertise = %options.advertise, "registered in etcd");
        Ok(Self {
            registrations,
            drain_grace: options.drain_grace,
        })
    }

    /// Marks the node draining, removes its key, and waits `drain_grace`
    /// for the fronts to stop sending; the caller then stops the server,
    /// which finishes what it admitted.
    pub async fn drain(self) {
        for registration in self.registrations {
            if let Err(e) = registration.set_state(EndpointState::Draining).await {
                tracing::warn!(error = %e, "could not mark the node draining");
            }
            if let Err(e) = registration.deregister().await {
                tracing::warn!(error = %e, "could not deregister (the lease will expire)");
            }
        }
        tracing::info!(grace = ?self.drain_grace, "deregistered; finishing in-flight requests");
        tokio::time::sleep(self.drain_grace).await;
    }
}
