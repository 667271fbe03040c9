//! `[deployment.remote]`: a deployment whose replicas are other machines'
//! servers (nodes), served by `multi-model-front`.
//!
//! ```toml
//! [[deployment]]
//! name = "identity"
//!
//! [[deployment.version]]
//! name = "1"
//! weight = 90
//!
//! [[deployment.version]]
//! name = "2"
//! weight = 10
//!
//! [deployment.remote]
//! # Exactly one source of nodes:
//! static = { "1" = ["a=10.0.0.1:8000"], "2" = ["b=10.0.0.2:8000"] }
//! # etcd = { url = "http://etcd:2379", prefix = "/convoy/endpoints/" }
//! # kubernetes = { namespace = "convoy", port = "http", grpc_port = "grpc", services = { "1" = "convoy-node" } }
//! # With `[server] grpc_addr`, the nodes' KServe v2 gRPC services: with the
//! # static source, each version's list (etcd nodes register theirs; on
//! # Kubernetes, the Services' port `grpc_port`).
//! grpc = { "1" = ["a=10.0.0.1:8001"], "2" = ["b=10.0.0.2:8001"] }
//! cold_start_queue = 64      # requests waiting for a first node, at most
//! cold_start_timeout = "30s" # how long each waits for a node the front starts
//! ready_timeout = "2s"       # ... for a node of a version it does not scale
//!
//! [[deployment.remote.autoscale]]
//! version = "1"
//! min = 0
//! max = 8
//! target_ongoing = 8
//! ```
//!
//! The versions, their weights and a `[deployment.rollout]` are the
//! deployment's as for local replicas: the front splits between the
//! versions' node groups with the same convoy-router `Split` and `Rollout`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::de::duration;

/// `[deployment.remote]`: where the nodes of each version are and how the
/// front treats them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawRemote")]
pub struct RemoteConfig {
    /// Where the nodes are.
    pub source: NodeSource,
    /// Consecutive failed calls that eject a node (a failed probe ejects at
    /// once).
    pub eject_after: u32,
    /// Time between two health probes of an ejected node.
    pub probe_interval: Duration,
    /// Bound on one health probe.
    pub probe_timeout: Duration,
    /// How long a request waits for a ready node of a version the front
    /// does not scale (its nodes all ejected or restarting) before a 503
    /// with `Retry-After`.
    pub ready_timeout: Duration,
    /// Requests that wait at most for a version without any ready node;
    /// beyond, 503 with `Retry-After` at once.
    pub cold_start_queue: usize,
    /// How long each of them waits at most for a version the front scales
    /// (a node to be started: scale from zero); beyond, 503 with
    /// `Retry-After`.
    pub cold_start_timeout: Duration,
    /// The front's autoscaler, per version (none: the nodes are scaled
    /// elsewhere).
    pub autoscale: Vec<RemoteAutoscale>,
    /// With the static source: version → its nodes' gRPC services, for a
    /// front serving gRPC (`[server] grpc_addr`).
    pub grpc: Option<NodeLists>,
}

/// Version → its nodes, `(id, address)`.
pub type NodeLists = BTreeMap<String, Vec<(String, SocketAddr)>>;

/// Where a remote deployment's nodes are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NodeSource {
    /// Fixed lists: version → `(id, address)`.
    Static(NodeLists),
    /// Registered in etcd (each node names its version).
    Etcd(EtcdNodes),
    /// The EndpointSlices of one Service per version.
    Kubernetes(KubernetesNodes),
}

/// `[deployment.remote.etcd]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EtcdNodes {
    /// etcd client URL.
    pub url: String,
    /// Key prefix the nodes register under.
    #[serde(default = "default_prefix")]
    pub prefix: String,
}

fn default_prefix() -> String {
    "/convoy/endpoints/".into()
}

/// `[deployment.remote.kubernetes]`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubernetesNodes {
    /// The Services' namespace.
    pub namespace: String,
    /// Version → the Service whose endpoints serve it.
    pub services: BTreeMap<String, String>,
    /// The name of the Services' port the nodes serve HTTP on (default:
    /// the slices' first port).
    #[serde(default)]
    pub port: Option<String>,
    /// The name of the Services' port the nodes serve KServe v2 gRPC on,
    /// for a front serving gRPC (`[server] grpc_addr`).
    #[serde(default)]
    pub grpc_port: Option<String>,
}

/// `[[deployment.remote.autoscale]]`: the front scales one version's nodes
/// by convoy-autoscale's `TargetOngoing` on the in-flight requests read
/// from the nodes' `/metrics` (and the requests waiting at the front).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RemoteAutoscale {
    /// The version whose nodes it scales.
    pub version: String,
    /// Nodes kept at least; 0 scales to zero (requests then wait in the
    /// cold-start queue while one node starts).
    #[serde(default = "one")]
    pub min: u32,
    /// Nodes at most.
    pub max: u32,
    /// Requests in flight per node.
    #[serde(default = "eight")]
    pub target_ongoing: f64,
    /// Time between two decisions and two scrapes of the nodes' metrics.
    #[serde(default = "second", deserialize_with = "duration")]
    pub interval: Duration,
    /// The in-flight average the policy decides on is taken over this
    /// look-back (Ray Serve's `look_back_period_s`, 30 s there).
    #[serde(default = "ten_seconds", deserialize_with = "duration")]
    pub look_back: Duration,
    /// How long the policy must ask for fewer nodes before they go.
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    pub downscale_delay: Duration,
    /// A Kubernetes Deployment scaled through its `scale` subresource
    /// (convoy-kube's `KubeScaler`, written only while this front holds the
    /// Lease); none: the program embedding the front gives the scaler.
    #[serde(default)]
    pub kubernetes: Option<KubeScale>,
}

/// `kubernetes = { deployment = "...", lease = "..." }` of an autoscale
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeScale {
    /// The nodes' Deployment (in the source's namespace).
    pub deployment: String,
    /// The Lease whose holder alone writes (default
    /// `<deployment>-autoscaler`).
    #[serde(default)]
    pub lease: Option<String>,
}

fn one() -> u32 {
    1
}
fn eight() -> f64 {
    8.0
}
fn second() -> Duration {
    Duration::from_secs(1)
}
fn ten_seconds() -> Duration {
    Duration::from_secs(10)
}
fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRemote {
    #[serde(rename = "static", default, deserialize_with = "static_lists")]
    static_nodes: Option<NodeLists>,
    #[serde(default)]
    etcd: Option<EtcdNodes>,
    #[serde(default)]
    kubernetes: Option<KubernetesNodes>,
    #[serde(default = "three")]
    eject_after: u32,
    #[serde(default = "half_second", deserialize_with = "duration")]
    probe_interval: Duration,
    #[serde(default = "half_second", deserialize_with = "duration")]
    probe_timeout: Duration,
    #[serde(default = "two_seconds", deserialize_with = "duration")]
    ready_timeout: Duration,
    #[serde(default = "sixty_four")]
    cold_start_queue: usize,
    #[serde(default = "thirty_seconds", deserialize_with = "duration")]
    cold_start_timeout: Duration,
    #[serde(default)]
    autoscale: Vec<RemoteAutoscale>,
    #[serde(default, deserialize_with = "grpc_lists")]
    grpc: Option<NodeLists>,
}

fn three() -> u32 {
    3
}
fn half_second() -> Duration {
    Duration::from_millis(500)
}
fn two_seconds() -> Duration {
    Duration::from_secs(2)
}
fn sixty_four() -> usize {
    64
}

/// `ID=HOST:PORT` or `HOST:PORT` (the address is the id).
fn parse_node(s: &str) -> Result<(String, SocketAddr), String> {
    let (id, addr) = match s.split_once('=') {
        Some((id, addr)) => (id.to_string(), addr),
        None => (s.to_string(), s),
    };
    let addr = addr
        .parse()
        .map_err(|e| format!("{s:?}: expected [ID=]IP:PORT ({e})"))?;
    if id.is_empty() {
        return Err(format!("{s:?}: empty node id"));
    }
    Ok((id, addr))
}

fn static_lists<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeLists>, D::Error> {
    node_lists("static", d)
}

fn grpc_lists<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NodeLists>, D::Error> {
    node_lists("grpc", d)
}

/// Field `field`: version → `[ID=]IP:PORT` list, ids unique per version.
fn node_lists<'de, D: Deserializer<'de>>(field: &str, d: D) -> Result<Option<NodeLists>, D::Error> {
    let raw = BTreeMap::<String, Vec<String>>::deserialize(d)?;
    let mut lists = BTreeMap::new();
    for (version, nodes) in raw {
        let mut list: Vec<(String, SocketAddr)> = Vec::new();
        for node in &nodes {
            let node = parse_node(node)
                .map_err(|e| serde::de::Error::custom(format!("{field}.{version}: {e}")))?;
            if list.iter().any(|(id, _)| *id == node.0) {
                return Err(serde::de::Error::custom(format!(
                    "{field}.{version}: node id {:?} appears twice",
                    node.0
                )));
            }
            list.push(node);
        }
        lists.insert(version, list);
    }
    Ok(Some(lists))
}

impl TryFrom<RawRemote> for RemoteConfig {
    type Error = String;

    fn try_from(raw: RawRemote) -> Result<Self, String> {
        let source = match (raw.static_nodes, raw.etcd, raw.kubernetes) {
            (Some(lists), None, None) => NodeSource::Static(lists),
            (None, Some(etcd), None) => {
                if !etcd.url.starts_with("http://") && !etcd.url.starts_with("https://") {
                    return Err(format!(
                        "etcd.url: {:?} must be an http:// or https:// URL",
                        etcd.url
                    ));
                }
                if etcd.prefix.is_empty() {
                    return Err("etcd.prefix: must not be empty".into());
                }
                NodeSource::Etcd(etcd)
            }
            (None, None, Some(kube)) => {
                if kube.namespace.is_empty() {
                    return Err("kubernetes.namespace: must not be empty".into());
                }
                if kube.services.is_empty() {
                    return Err("kubernetes.services: name the Service of each version".into());
                }
                NodeSource::Kubernetes(kube)
            }
            _ => {
                return Err(
                    "remote: name exactly one source of nodes: static, etcd or kubernetes".into(),
                )
            }
        };
        if raw.grpc.is_some() && !matches!(source, NodeSource::Static(_)) {
            return Err(
                "grpc: only with the static source (etcd nodes register their gRPC address; on Kubernetes name kubernetes.grpc_port)"
                    .into(),
            );
        }
        if raw.eject_after == 0 {
            return Err("eject_after: must be at least 1".into());
        }
        if raw.cold_start_queue == 0 {
            return Err("cold_start_queue: must be at least 1".into());
        }
        for (field, d) in [
            ("probe_interval", raw.probe_interval),
            ("probe_timeout", raw.probe_timeout),
            ("ready_timeout", raw.ready_timeout),
            ("cold_start_timeout", raw.cold_start_timeout),
        ] {
            if d.is_zero() {
                return Err(format!("{field}: must be above 0"));
            }
        }
        for (i, a) in raw.autoscale.iter().enumerate() {
            if a.max == 0 {
                return Err(format!(
                    "autoscale.max (version {:?}): must be at least 1",
                    a.version
                ));
            }
            if !(a.target_ongoing.is_finite() && a.target_ongoing > 0.0) {
                return Err(format!(
                    "autoscale.target_ongoing (version {:?}): must be a number above 0, got {}",
                    a.version, a.target_ongoing
                ));
            }
            if a.interval.is_zero() {
                return Err(format!(
                    "autoscale.interval (version {:?}): must be above 0",
                    a.version
                ));
            }
            if raw.autoscale[..i].iter().any(|b| b.version == a.version) {
                return Err(format!("autoscale.version: {:?} appears twice", a.version));
            }
            if a.min > a.max {
                return Err(format!(
                    "autoscale.min ({}) is above autoscale.max ({}) for version {:?}",
                    a.min, a.max, a.version
                ));
            }
            if a.kubernetes.is_some() && !matches!(source, NodeSource::Kubernetes(_)) {
                return Err(format!(
                    "autoscale.kubernetes (version {:?}): needs the kubernetes source",
                    a.version
                ));
            }
            if matches!(source, NodeSource::Static(_)) && a.min == 0 {
                return Err(format!(
                    "autoscale.min (version {:?}): a static list cannot scale to zero (its nodes never come back); use etcd or kubernetes",
                    a.version
                ));
            }
        }
        Ok(Self {
            source,
            eject_after: raw.eject_after,
            probe_interval: raw.probe_interval,
            probe_timeout: raw.probe_timeout,
            ready_timeout: raw.ready_timeout,
            cold_start_queue: raw.cold_start_queue,
            cold_start_timeout: raw.cold_start_timeout,
            autoscale: raw.autoscale,
            grpc: raw.grpc,
        })
    }
}

impl RemoteConfig {
    /// Checks the remote section against the deployment's versions: every
    /// version has its nodes (a static list or a Service), none is named
    /// that the deployment lacks.
    pub(super) fn check_versions(&self, versions: &[&str]) -> Result<(), String> {
        let named: Option<(&str, Vec<&String>)> = match &self.source {
            NodeSource::Static(lists) => Some(("static", lists.keys().collect())),
            NodeSource::Kubernetes(k) => Some(("kubernetes.services", k.services.keys().collect())),
            NodeSource::Etcd(_) => None,
        };
        if let Some((field, named)) = named {
            for v in &named {
                if !versions.contains(&v.as_str()) {
                    return Err(format!(
                        "remote.{field}: version {v:?} is not one of the deployment's versions {versions:?}"
                    ));
                }
            }
            for v in versions {
                if !named.iter().any(|n| n == v) {
                    return Err(format!("remote.{field}: no nodes for version {v:?}"));
                }
            }
        }
        for v in self.grpc.iter().flat_map(|lists| lists.keys()) {
            if !versions.contains(&v.as_str()) {
                return Err(format!(
                    "remote.grpc: version {v:?} is not one of the deployment's versions {versions:?}"
                ));
            }
        }
        for a in &self.autoscale {
            if !versions.contains(&a.version.as_str()) {
                return Err(format!(
                    "remote.autoscale.version: {:?} is not one of the deployment's versions {versions:?}",
                    a.version
                ));
            }
        }
        Ok(())
    }
}
