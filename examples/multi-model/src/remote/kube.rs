//! `[deployment.remote.kubernetes]` through convoy-kube (feature
//! `kubernetes`): the nodes of each version are the Ready endpoints of its
//! Service's EndpointSlices, and an autoscale entry's `kubernetes` scales
//! a Deployment through its `scale` subresource while this front holds
//! the Lease. Without the feature the section parses, and the front
//! refuses to start on it, naming the feature.

use std::sync::Arc;

use bytes::Bytes;
use convoy_autoscale::Scaler;
use convoy_remote::scrape::MetricsScraper;
use convoy_remote::{ChangeStream, HttpEndpoint, Pool};
use http_body_util::Full;
use tower::BoxError;

use crate::config::{KubeScale, KubernetesNodes, RemoteAutoscale};

/// The API client, when a deployment names Kubernetes.
#[cfg(feature = "kubernetes")]
pub(super) type Client = convoy_kube::kube::Client;
/// The API client, which this build cannot make.
#[cfg(not(feature = "kubernetes"))]
#[derive(Debug, Clone)]
pub(super) enum Client {}

#[cfg(not(feature = "kubernetes"))]
fn missing(deployment: &str, field: &str) -> BoxError {
    format!(
        "deployment {deployment}: remote.{field}: this front was built without Kubernetes support (cargo feature `kubernetes` of example-multi-model)"
    )
    .into()
}

/// The in-cluster (or kubeconfig's) client.
#[cfg(feature = "kubernetes")]
pub(super) async fn client(deployment: &str) -> Result<Client, BoxError> {
    convoy_kube::kube::Client::try_default().await.map_err(|e| {
        format!("deployment {deployment}: remote.kubernetes: no API client: {e}").into()
    })
}

/// The in-cluster (or kubeconfig's) client.
#[cfg(not(feature = "kubernetes"))]
pub(super) async fn client(deployment: &str) -> Result<Client, BoxError> {
    Err(missing(deployment, "kubernetes"))
}

/// Every version's Service endpoints, as one change stream; with `grpc`,
/// their port named `grpc_port` as version `VERSION/grpc`.
#[cfg(feature = "kubernetes")]
pub(super) fn source(
    client: &Client,
    deployment: &str,
    nodes: &KubernetesNodes,
    grpc: bool,
) -> Result<ChangeStream, BoxError> {
    use convoy_kube::EndpointSliceSource;
    use convoy_remote::EndpointSource;
    let mut streams = Vec::new();
    for (version, service) in &nodes.services {
        let (version, port) = if grpc {
            let port = nodes.grpc_port.as_ref().ok_or_else(|| {
                format!("deployment {deployment}: remote.kubernetes.grpc_port: the front serves gRPC ([server] grpc_addr): name the Services' gRPC port")
            })?;
            (format!("{version}/grpc"), Some(port))
        } else {
            (version.clone(), nodes.port.as_ref())
        };
        let mut source =
            EndpointSliceSource::new(client.clone(), &nodes.namespace, service, &version)
                .map_err(|e| format!("deployment {deployment}: remote.kubernetes: {e}"))?;
        if let Some(port) = port {
            source = source.port_name(port);
        }
        streams.push(source.changes());
    }
    Ok(Box::pin(futures::stream::select_all(streams)))
}

/// Every version's Service endpoints, as one change stream.
#[cfg(not(feature = "kubernetes"))]
pub(super) fn source(
    _client: &Client,
    deployment: &str,
    _nodes: &KubernetesNodes,
    _grpc: bool,
) -> Result<ChangeStream, BoxError> {
    Err(missing(deployment, "kubernetes"))
}

/// convoy-kube's `KubeScaler` for the version's Deployment, writing only
/// while this front holds the Lease (its identity: `POD_NAME`, else the
/// host name), its ready count the version's serving nodes.
#[cfg(feature = "kubernetes")]
pub(super) async fn scaler(
    client: &Client,
    deployment: &str,
    a: &RemoteAutoscale,
    k: &KubeScale,
    nodes: &KubernetesNodes,
    pool: &Pool<HttpEndpoint<Full<Bytes>>>,
    scraper: &Arc<MetricsScraper>,
) -> Result<Arc<dyn Scaler>, BoxError> {
    use convoy_kube::{KubeScaler, LeaderConfig, LeaderElector, PodLoadSnapshot};
    let field = |e: convoy_kube::Error| {
        format!(
            "deployment {deployment}: remote.autoscale (version {}).kubernetes: {e}",
            a.version
        )
    };
    let identity = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| format!("front-{}", std::process::id()));
    let lease = k
        .lease
        .clone()
        .unwrap_or_else(|| format!("{}-autoscaler", k.deployment));
    let elector = LeaderElector::new(
        client.clone(),
        LeaderConfig::new(nodes.namespace.clone(), lease, identity),
    )
    .map_err(field)?;
    let ready = {
        let (pool, version) = (pool.clone(), a.version.clone());
        move || u32::try_from(pool.serving(&version)).ok()
    };
    // Each pod's in-flight requests, read from its /metrics (the endpoint
    // id is the pod's name): the least loaded go first on a scale-down.
    let per_pod = {
        let scraper = scraper.clone();
        move || {
            let figures = scraper.ongoing_by_replica();
            PodLoadSnapshot {
                taken_at: figures
                    .iter()
                    .map(|(_, at, _)| *at)
                    .min()
                    .unwrap_or_else(tokio::time::Instant::now),
                per_pod: figures.into_iter().map(|(id, _, n)| (id, n)).collect(),
            }
        }
    };
    let scaler = KubeScaler::new(client.clone(), &nodes.namespace, &k.deployment)
        .map_err(field)?
        .leader(elector.handle())
        .ready_count(ready)
        .pod_load(per_pod);
    let scaler = Arc::new(scaler);
    tokio::spawn(elector.run());
    tokio::spawn(
        scaler
            .clone()
            .refresh_every(std::time::Duration::from_secs(5)),
    );
    Ok(scaler)
}

/// convoy-kube's `KubeScaler` for the version's Deployment.
#[cfg(not(feature = "kubernetes"))]
pub(super) async fn scaler(
    _client: &Client,
    deployment: &str,
    _a: &RemoteAutoscale,
    _k: &KubeScale,
    _nodes: &KubernetesNodes,
    _pool: &Pool<HttpEndpoint<Full<Bytes>>>,
    _scraper: &Arc<MetricsScraper>,
) -> Result<Arc<dyn Scaler>, BoxError> {
    Err(missing(deployment, "autoscale.kubernetes"))
}
