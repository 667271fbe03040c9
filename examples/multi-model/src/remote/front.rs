//! The front: deployments whose replicas are remote nodes, each a
//! convoy-router `Split` over one convoy-remote balancer per version (see
//! the [module docs](super)).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use bytes::Bytes;
use convoy_autoscale::{AutoscalerHandle, Scaler};
use convoy_remote::source::etcd::{EtcdConfig, EtcdSource};
use convoy_remote::{
    ChangeStream, Endpoint, EndpointSource, EndpointState, HttpConnector, HttpEndpoint, HttpProbe,
    NeverSentPolicy, Pool, PoolConfig, RetryConfig, StaticSource,
};
use convoy_router::balance::{BalanceConfig, LoadMetric};
use convoy_router::split::Override;
use convoy_router::{NoReadyReplica, Rollout, RolloutHandle, Split, SplitHandle};
use futures::StreamExt;
use http_body_util::Full;
use tower::retry::Retry;
use tower::{BoxError, Layer, ServiceExt};

use super::cold::{ColdStart, Gated, NoNode, NodeFailed};
use super::grpc::{self, Malformed};
use crate::config::{Config, DeploymentConfig, NodeSource, RemoteConfig};
use crate::http::VERSION_HEADER;

/// Where a front finds its nodes (the command line's form; a
/// configuration file says it in `[deployment.remote]`).
#[derive(Debug, Clone)]
pub enum Nodes {
    /// A fixed list: (id, address).
    Static(Vec<(String, SocketAddr)>),
    /// Nodes registered in etcd under a prefix.
    Etcd {
        /// etcd client URL.
        url: String,
        /// Key prefix.
        prefix: String,
    },
}

/// How a front balances (the command line's single-version form; see
/// [`Front::from_config`] for deployments and versions).
#[derive(Debug, Clone)]
pub struct FrontOptions {
    /// Where the nodes are.
    pub nodes: Nodes,
    /// The model version to balance over.
    pub version: String,
    /// Largest request body forwarded.
    pub body_limit: usize,
    /// Ejection and probing.
    pub pool: PoolConfig,
    /// How long a request waits for a ready node before a 503.
    pub ready_timeout: Duration,
    /// Bound on one forwarded request, answer included (a node cut off by
    /// a partition holds its requests until then): 504 beyond.
    pub request_timeout: Duration,
    /// Where the nodes' KServe v2 gRPC services are, for
    /// [`Front::grpc_router`]: a static list, or in etcd the endpoints of
    /// version `VERSION/grpc` (what a node registers for its gRPC address).
    pub grpc_nodes: Option<Nodes>,
}

impl FrontOptions {
    /// Defaults around `nodes` for `version`.
    pub fn new(nodes: Nodes, version: impl Into<String>) -> Self {
        Self {
            nodes,
            version: version.into(),
            body_limit: 64 << 20,
            pool: PoolConfig {
                eject_after: 3,
                probe_interval: Duration::from_millis(500),
                probe_timeout: Duration::from_millis(500),
            },
            ready_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(30),
            grpc_nodes: None,
        }
    }
}

type Forwarded = http::Request<Full<Bytes>>;
type Answer = http::Response<hyper::body::Incoming>;
type GrpcClient = convoy_router::Balancer<http::Request<Body>, Answer>;
type Client = Retry<NeverSentPolicy, convoy_router::Balancer<Forwarded, Answer>>;
/// One version's node group as a backend of the deployment's split.
pub type VersionClient = Gated<Client>;

/// The scalers an embedding program gives the front, by (deployment,
/// version), for `[[deployment.remote.autoscale]]` entries without
/// `kubernetes`.
pub type Scalers = BTreeMap<(String, String), Arc<dyn Scaler>>;

/// A deployment whose versions are node groups.
pub struct RemoteDeployment {
    /// The name clients use.
    pub name: String,
    pool: Pool<HttpEndpoint<Full<Bytes>>>,
    split: Split<VersionClient, Forwarded>,
    /// Live weights of the split between the versions' node groups.
    pub handle: SplitHandle<VersionClient>,
    /// Each version's cold-start state, in the configuration's order.
    pub versions: Vec<(String, Arc<ColdStart>)>,
    rollout: Option<RolloutHandle>,
    autoscalers: Vec<(String, AutoscalerHandle)>,
    /// Its nodes' gRPC services, when the front serves gRPC.
    grpc: Option<GrpcVersions>,
}

/// A deployment's gRPC side: per version (in the configuration's order) a
/// balancer over the nodes' gRPC services, behind that version's
/// cold-start queue (the REST requests' own); versions chosen by the
/// split's current weights.
struct GrpcVersions {
    pool: Pool<HttpEndpoint<Body>>,
    clients: Vec<Gated<GrpcClient>>,
    /// Smooth weighted round robin's running scores.
    current: parking_lot::Mutex<Vec<f64>>,
}

impl std::fmt::Debug for RemoteDeployment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteDeployment")
            .field("name", &self.name)
            .field("versions", &self.versions)
            .finish_non_exhaustive()
    }
}

impl RemoteDeployment {
    /// The autoscaler of `version`, when the front scales it.
    pub fn autoscaler(&self, version: &str) -> Option<&AutoscalerHandle> {
        self.autoscalers
            .iter()
            .find(|(v, _)| v == version)
            .map(|(_, h)| h)
    }

    /// The rollout between the node groups, when the configuration plans
    /// one.
    pub fn rollout(&self) -> Option<&RolloutHandle> {
        self.rollout.as_ref()
    }

    /// The nodes known and whether each serves.
    pub fn endpoints(&self) -> Vec<convoy_remote::EndpointStatus> {
        self.pool.endpoints()
    }

    /// The nodes' gRPC services known and whether each serves (none when
    /// the front serves no gRPC).
    pub fn grpc_endpoints(&self) -> Vec<convoy_remote::EndpointStatus> {
        self.grpc
            .as_ref()
            .map(|g| g.pool.endpoints())
            .unwrap_or_default()
    }
}

/// Pins a request to a version: `x-convoy-version`, or the version of a
/// KServe v2 path (`/v2/models/NAME/versions/V/...`).
struct PinVersion;

impl Override<Forwarded> for PinVersion {
    fn backend<'a>(&'a self, req: &'a Forwarded) -> Option<&'a str> {
        if let Some(v) = req.headers().get(VERSION_HEADER) {
            return v.to_str().ok();
        }
        let mut parts = req.uri().path().trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next(), parts.next()) {
            (Some("v2"), Some("models"), Some(_), Some("versions")) => parts.next(),
            _ => None,
        }
    }
}

/// A front: forwards every request to one of the nodes (see the
/// [module docs](super)).
#[derive(Debug, Clone)]
pub struct Front {
    deployments: Arc<Vec<RemoteDeployment>>,
    /// Without a configuration file: every path goes to the one
    /// deployment, whatever model it names.
    catch_all: bool,
    grpc: Option<(Pool<HttpEndpoint<Body>>, GrpcClient)>,
    body_limit: usize,
    request_timeout: Duration,
}

fn balance(ready_timeout: Duration) -> BalanceConfig {
    BalanceConfig {
        load: LoadMetric::PendingRequests,
        ready_timeout,
        buffer_capacity: 4096,
    }
}

/// One version's client over `pool`: p2c, never-sent retries, the
/// cold-start queue.
fn version_client(
    pool: &Pool<HttpEndpoint<Full<Bytes>>>,
    deployment: &str,
    version: &str,
    ready_timeout: Duration,
    queue: usize,
    cold_timeout: Duration,
) -> Result<(VersionClient, Arc<ColdStart>), BoxError> {
    let balancer = pool.balancer::<Forwarded>(version.to_string(), balance(ready_timeout))?;
    let client = NeverSentPolicy::layer(&RetryConfig::default())?.layer(balancer);
    let ready = {
        let (pool, version) = (pool.clone(), version.to_string());
        move || pool.serving(&version) > 0
    };
    let cold = ColdStart::new(deployment, version, ready, queue, cold_timeout)?;
    Ok((Gated::new(client, cold.clone()), cold))
}

/// A pool over nodes' gRPC services. A gRPC port has no HTTP health
/// route: its probe is a TCP connect; failed calls eject a node as
/// anywhere else.
fn grpc_pool(
    source: ChangeStream,
    config: PoolConfig,
) -> Result<Pool<HttpEndpoint<Body>>, BoxError> {
    Ok(Pool::new(
        source,
        HttpConnector::<Body>::grpc(Duration::from_secs(1)),
        |e: &Endpoint| {
            let addr = e.addr;
            async move { tokio::net::TcpStream::connect(addr).await.is_ok() }
        },
        config,
    )?)
}

/// Fixed lists (version → nodes) as endpoints of version `VERSION` +
/// `suffix`.
fn static_source(lists: &crate::config::NodeLists, suffix: &str) -> ChangeStream {
    StaticSource::new(lists.iter().flat_map(move |(v, nodes)| {
        nodes
            .iter()
            .map(move |(id, addr)| Endpoint::ready(id.clone(), *addr, format!("{v}{suffix}")))
    }))
    .changes()
}

fn http_pool(
    source: ChangeStream,
    config: PoolConfig,
) -> Result<Pool<HttpEndpoint<Full<Bytes>>>, BoxError> {
    Ok(Pool::new(
        source,
        HttpConnector::http1(Duration::from_secs(1)),
        HttpProbe::new("/v2/health/ready", Duration::from_millis(500)),
        config,
    )?)
}

impl Front {
    /// Starts following the nodes of the command line's one version.
    /// Needs a tokio runtime.
    pub fn new(options: FrontOptions) -> Result<Self, BoxError> {
        // The recorder first: the pieces register their handles as built.
        crate::http::prometheus();
        let pool = http_pool(
            source(&options.nodes, &options.version)?,
            options.pool.clone(),
        )?;
        // No cold-start wait beyond the balancer's: these nodes are not
        // scaled by the front.
        let (client, cold) = version_client(
            &pool,
            "front",
            &options.version,
            options.ready_timeout,
            4096,
            options.ready_timeout,
        )?;
        let (split, handle) = Split::builder()
            .name("front")
            .backend(options.version.as_str(), client, 100.0)
            .build()?;
        let deployment = RemoteDeployment {
            name: String::new(),
            pool,
            split,
            handle,
            versions: vec![(options.version.clone(), cold)],
            rollout: None,
            autoscalers: Vec::new(),
            grpc: None,
        };
        let grpc = match &options.grpc_nodes {
            Some(nodes) => {
                let version = format!("{}/grpc", options.version);
                let pool = grpc_pool(source(nodes, &version)?, options.pool.clone())?;
                let balancer =
                    pool.balancer::<http::Request<Body>>(version, balance(options.ready_timeout))?;
                Some((pool, balancer))
            }
            None => None,
        };
        Ok(Self {
            deployments: Arc::new(vec![deployment]),
            catch_all: true,
            grpc,
            body_limit: options.body_limit,
            request_timeout: options.request_timeout,
        })
    }

    /// Starts the front of `config`, whose every deployment has a
    /// `[deployment.remote]` section: per deployment a `Split` (and its
    /// `Rollout`, when planned) over one node group per version, and an
    /// autoscaler per `[[deployment.remote.autoscale]]` entry, whose
    /// scaler comes from `scalers` (or Kubernetes). Needs a tokio runtime.
    ///
    /// With `[server] grpc_addr`, every deployment also gets a balancer per
    /// version over its nodes' gRPC services ([`Front::grpc_router`]):
    /// `remote.grpc` lists with the static source, the nodes' registered
    /// gRPC addresses with etcd, the Services' port
    /// `remote.kubernetes.grpc_port` on Kubernetes.
    pub async fn from_config(config: &Config, mut scalers: Scalers) -> Result<Self, BoxError> {
        // The recorder first: the pieces register their handles as built.
        crate::http::prometheus();
        let serve_grpc = config.server.grpc_addr.is_some();
        let mut deployments = Vec::new();
        for d in config.deployments() {
            let remote = d.remote.as_ref().ok_or_else(|| {
                format!(
                    "deployment {}: no [deployment.remote] (the front serves only remote deployments)",
                    d.name
                )
            })?;
            deployments.push(remote_deployment(d, remote, &mut scalers, serve_grpc).await?);
        }
        if let Some(((d, v), _)) = scalers.into_iter().next() {
            return Err(format!(
                "a scaler was given for {d}/{v}, which has no [[deployment.remote.autoscale]] entry"
            )
            .into());
        }
        Ok(Self {
            deployments: Arc::new(deployments),
            catch_all: false,
            grpc: None,
            body_limit: usize::try_from(config.server.body_limit).unwrap_or(usize::MAX),
            request_timeout: config.server.request_timeout,
        })
    }

    /// The deployments.
    pub fn deployments(&self) -> &[RemoteDeployment] {
        &self.deployments
    }

    /// The nodes known and whether each serves (every deployment's).
    pub fn endpoints(&self) -> Vec<convoy_remote::EndpointStatus> {
        self.deployments
            .iter()
            .flat_map(RemoteDeployment::endpoints)
            .collect()
    }

    /// The nodes of the gRPC service, when there is one (every
    /// deployment's).
    pub fn grpc_endpoints(&self) -> Vec<convoy_remote::EndpointStatus> {
        match &self.grpc {
            Some((pool, _)) => pool.endpoints(),
            None => self
                .deployments
                .iter()
                .flat_map(RemoteDeployment::grpc_endpoints)
                .collect(),
        }
    }

    /// Stops the autoscalers: no scale write after this returns. A rollout
    /// in progress runs on until it ends (it only moves the split's
    /// weights) or the process exits.
    pub fn shutdown(&self) {
        for d in self.deployments.iter() {
            for (_, a) in &d.autoscalers {
                a.shutdown();
            }
        }
    }

    /// The front's KServe v2 gRPC service (HTTP/2); `None` when it serves
    /// no gRPC (no `grpc_nodes`, no `[server] grpc_addr`).
    ///
    /// Command line: every call forwarded to a node's gRPC service; one
    /// that finds no node is answered `UNAVAILABLE`. Configuration file:
    /// `ModelInfer`, `ModelMetadata` and `ModelReady` go to the deployment
    /// their message names (field 1; `NOT_FOUND` for another), to the
    /// version it names (field 2; `NOT_FOUND` for one the deployment
    /// lacks) or else one chosen by the split's weights (smooth weighted
    /// round robin), waiting in that version's cold-start queue like a
    /// REST request (`UNAVAILABLE` past it); the node's answer comes back
    /// unchanged (with `x-convoy-version`). A malformed message is
    /// `INVALID_ARGUMENT`, one above `server.body_limit`
    /// `RESOURCE_EXHAUSTED`. `ServerLive`, `ServerReady` and
    /// `ServerMetadata` are answered by the front itself (live and ready
    /// while it runs), other methods `UNIMPLEMENTED`. gRPC answers do not
    /// count in a rollout's analysis, which watches the REST requests.
    pub fn grpc_router(&self) -> Option<Router> {
        if let Some((_, balancer)) = &self.grpc {
            let state = (balancer.clone(), self.request_timeout);
            return Some(Router::new().fallback(forward_grpc).with_state(state));
        }
        if self.deployments.is_empty() || self.deployments.iter().any(|d| d.grpc.is_none()) {
            return None;
        }
        Some(
            Router::new()
                .fallback(forward_grpc_by_model)
                .with_state(Arc::new(self.clone())),
        )
    }

    /// The front's axum app: `GET /front/endpoints`, `GET
    /// /front/deployments`, its own `/metrics` (the splits', balancers',
    /// autoscalers' and cold-start queues' figures), its own `/healthz`
    /// and `/readyz` with a configuration file (a front scaled to zero
    /// nodes is still ready: requests wait for a node), and every other
    /// request forwarded.
    pub fn router(self) -> Router {
        let own = !self.catch_all;
        let router = Router::new()
            .route("/front/endpoints", get(endpoints))
            .route("/front/deployments", get(deployments_view))
            .route("/metrics", get(metrics_text));
        let router = if own {
            router
                .route("/healthz", get(|| async { "ok" }))
                .route("/readyz", get(|| async { "ready" }))
        } else {
            router
        };
        router.fallback(forward).with_state(Arc::new(self))
    }

    /// The deployment a request goes to: the one its path names (`None`:
    /// it names another), or the first for paths naming none.
    fn deployment_for(&self, path: &str) -> Option<&RemoteDeployment> {
        if self.catch_all {
            return self.deployments.first();
        }
        let mut parts = path.trim_start_matches('/').split('/');
        match (parts.next(), parts.next(), parts.next()) {
            (Some("v1" | "v2"), Some("models"), Some(name)) if !name.is_empty() => {
                let name = name.split(':').next().unwrap_or(name);
                self.deployments.iter().find(|d| d.name == name)
            }
            _ => self.deployments.first(),
        }
    }
}

async fn remote_deployment(
    d: &DeploymentConfig,
    remote: &RemoteConfig,
    scalers: &mut Scalers,
    serve_grpc: bool,
) -> Result<RemoteDeployment, BoxError> {
    let pool_config = PoolConfig {
        eject_after: remote.eject_after,
        probe_interval: remote.probe_interval,
        probe_timeout: remote.probe_timeout,
    };
    let (source, client): (ChangeStream, Option<super::kube::Client>) = match &remote.source {
        NodeSource::Static(lists) => (static_source(lists, ""), None),
        NodeSource::Etcd(e) => (
            EtcdSource::new(&EtcdConfig::new(e.url.clone(), e.prefix.clone()))?.changes(),
            None,
        ),
        NodeSource::Kubernetes(k) => {
            let client = super::kube::client(&d.name).await?;
            (
                super::kube::source(&client, &d.name, k, false)?,
                Some(client),
            )
        }
    };
    let grpc_source = match (&remote.source, &client) {
        _ if !serve_grpc => None,
        (NodeSource::Static(_), _) => {
            let lists = remote.grpc.as_ref().ok_or_else(|| {
                format!("deployment {}: remote.grpc: the front serves gRPC ([server] grpc_addr): list each version's gRPC nodes", d.name)
            })?;
            if let Some(v) = d.versions.iter().find(|v| !lists.contains_key(&v.name)) {
                return Err(format!(
                    "deployment {}: remote.grpc: no gRPC nodes for version {:?}",
                    d.name, v.name
                )
                .into());
            }
            Some(static_source(lists, "/grpc"))
        }
        (NodeSource::Etcd(e), _) => {
            // A node registers its gRPC service as `ID/grpc` beside its
            // HTTP endpoint: only those.
            let all = EtcdSource::new(&EtcdConfig::new(e.url.clone(), e.prefix.clone()))?;
            let grpc = all.changes().filter(|change| {
                let keep = change.as_ref().map_or(true, |c| c.id().ends_with("/grpc"));
                std::future::ready(keep)
            });
            Some(Box::pin(grpc) as ChangeStream)
        }
        (NodeSource::Kubernetes(k), Some(client)) => {
            Some(super::kube::source(client, &d.name, k, true)?)
        }
        (NodeSource::Kubernetes(_), None) => None,
    };
    let grpc_pool = grpc_source
        .map(|source| grpc_pool(source, pool_config.clone()))
        .transpose()?;
    let pool = http_pool(source, pool_config)?;
    let mut builder = Split::builder()
        .name(d.name.as_str())
        .override_with(PinVersion);
    let mut versions = Vec::new();
    let mut grpc_clients = Vec::new();
    for (i, v) in d.versions.iter().enumerate() {
        // Only a version the front scales waits for a node to be started;
        // another waits as long as for a node to come back.
        let autoscaled = remote.autoscale.iter().any(|a| a.version == v.name);
        let cold_timeout = if autoscaled {
            remote.cold_start_timeout
        } else {
            remote.ready_timeout
        };
        let (client, cold) = version_client(
            &pool,
            &d.name,
            &v.name,
            remote.ready_timeout,
            remote.cold_start_queue,
            cold_timeout,
        )?;
        // With a rollout plan, traffic starts on the stable version.
        let weight = match (&d.rollout, i) {
            (Some(_), 0) => 100.0,
            (Some(_), _) => 0.0,
            (None, _) => v.weight,
        };
        builder = builder.backend(v.name.as_str(), client, weight);
        if let Some(grpc_pool) = &grpc_pool {
            let balancer = grpc_pool.balancer::<http::Request<Body>>(
                format!("{}/grpc", v.name),
                balance(remote.ready_timeout),
            )?;
            grpc_clients.push(Gated::new(balancer, cold.clone()));
        }
        versions.push((v.name.clone(), cold));
    }
    let (split, handle) = builder.build()?;
    let rollout = match &d.rollout {
        Some(plan) => {
            let config = crate::deploy::rollout_config(
                plan,
                d.versions[0].name.clone(),
                d.versions[1].name.clone(),
            );
            Some(Rollout::new(handle.clone(), config)?.start())
        }
        None => None,
    };
    let mut autoscalers = Vec::new();
    for a in &remote.autoscale {
        let key = (d.name.clone(), a.version.clone());
        let scraper = super::scale::scraper(a, &pool)?;
        let scaler = match (scalers.remove(&key), &a.kubernetes, &remote.source, &client) {
            (Some(s), _, _, _) => s,
            (None, Some(k), NodeSource::Kubernetes(nodes), Some(client)) => {
                super::kube::scaler(client, &d.name, a, k, nodes, &pool, &scraper).await?
            }
            _ => {
                return Err(format!(
                    "deployment {}: remote.autoscale version {:?}: no scaler (give `kubernetes = {{ deployment = ... }}`, or run the front from a program that supplies one)",
                    d.name, a.version
                )
                .into())
            }
        };
        let cold = versions
            .iter()
            .find(|(v, _)| *v == a.version)
            .map(|(_, c)| c.clone())
            .ok_or_else(|| format!("remote.autoscale.version: no version {:?}", a.version))?;
        let handle = super::scale::start(&d.name, a, scaler, scraper, &cold)?;
        autoscalers.push((a.version.clone(), handle));
    }
    Ok(RemoteDeployment {
        name: d.name.clone(),
        pool,
        split,
        handle,
        versions,
        rollout,
        autoscalers,
        grpc: grpc_pool.map(|pool| GrpcVersions {
            pool,
            clients: grpc_clients,
            current: parking_lot::Mutex::new(Vec::new()),
        }),
    })
}

fn source(nodes: &Nodes, version: &str) -> Result<ChangeStream, BoxError> {
    Ok(match nodes {
        Nodes::Static(list) => StaticSource::new(
            list.iter()
                .map(|(id, addr)| Endpoint::ready(id.clone(), *addr, version)),
        )
        .changes(),
        Nodes::Etcd { url, prefix } => {
            EtcdSource::new(&EtcdConfig::new(url.clone(), prefix.clone()))?.changes()
        }
    })
}

async fn forward_grpc(
    State((balancer, bound)): State<(GrpcClient, Duration)>,
    req: Request,
) -> Response {
    match tokio::time::timeout(bound, balancer.oneshot(req)).await {
        Ok(Ok(rsp)) => rsp.map(Body::new),
        Ok(Err(e)) if e.is::<NoReadyReplica>() => {
            grpc::status(tonic::Code::Unavailable, "no ready node")
        }
        Ok(Err(e)) => grpc::status(tonic::Code::Unavailable, &format!("node: {e}")),
        Err(_) => grpc::status(
            tonic::Code::DeadlineExceeded,
            "no answer from a node in time",
        ),
    }
}

/// A configuration file's gRPC call, routed by the model its message
/// names (see [`Front::grpc_router`]).
async fn forward_grpc_by_model(State(front): State<Arc<Front>>, req: Request) -> Response {
    use tonic::Code;
    let path = req.uri().path();
    let Some(method) = path.strip_prefix(grpc::SERVICE).map(str::to_owned) else {
        return grpc::status(
            Code::Unimplemented,
            &format!("{path}: the front serves inference.GRPCInferenceService only"),
        );
    };
    if let Some(rsp) = grpc::own_answer(&method) {
        return rsp;
    }
    if !grpc::PER_MODEL.contains(&method.as_str()) {
        return grpc::status(
            Code::Unimplemented,
            &format!("{method}: not a KServe v2 method the front serves"),
        );
    }
    let (parts, body) = req.into_parts();
    let limit = front.body_limit.saturating_add(5);
    let bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(e) => {
            return grpc::status(
                Code::ResourceExhausted,
                &format!(
                    "{method}: request message: {e} (limit {} bytes)",
                    front.body_limit
                ),
            )
        }
    };
    let (deployment, index) = match route_grpc(&front, &method, &bytes) {
        Ok(route) => route,
        Err(rsp) => return *rsp,
    };
    let Some(grpc) = &deployment.grpc else {
        return grpc::status(Code::Unavailable, "the front serves no gRPC");
    };
    let req = http::Request::from_parts(parts, Body::from(bytes));
    let call = grpc.clients[index].clone().oneshot(req);
    match tokio::time::timeout(front.request_timeout, call).await {
        Ok(Ok(rsp)) => rsp.map(Body::new),
        Ok(Err(e)) => match e
            .downcast_ref::<NodeFailed<hyper::body::Incoming>>()
            .and_then(NodeFailed::take)
        {
            Some(rsp) => rsp.map(Body::new),
            None if e.is::<NoReadyReplica>() => grpc::status(
                Code::Unavailable,
                &format!(
                    "no ready gRPC node of version {}",
                    deployment.versions[index].0
                ),
            ),
            None => grpc::status(Code::Unavailable, &format!("node: {e}")),
        },
        Err(_) => grpc::status(
            Code::DeadlineExceeded,
            &format!("no answer from a node within {:?}", front.request_timeout),
        ),
    }
}

/// The deployment and version (index) a per-model call's message names,
/// or the status answering it.
fn route_grpc<'a>(
    front: &'a Front,
    method: &str,
    message: &[u8],
) -> Result<(&'a RemoteDeployment, usize), Box<Response>> {
    use tonic::Code;
    let refuse = |code, message: String| Box::new(grpc::status(code, &message));
    let (name, version) = match grpc::model_of(message) {
        Ok(named) => named,
        Err(Malformed::Compressed) => {
            return Err(refuse(
                Code::Unimplemented,
                format!("{method}: a compressed message (the front reads the model name: send it uncompressed)"),
            ))
        }
        Err(Malformed::Invalid(why)) => {
            return Err(refuse(
                Code::InvalidArgument,
                format!("{method}: malformed request message: {why}"),
            ))
        }
    };
    if name.is_empty() {
        return Err(refuse(
            Code::InvalidArgument,
            format!("{method}: the model name (field 1) is empty"),
        ));
    }
    let Some(deployment) = front.deployments.iter().find(|d| d.name == name) else {
        return Err(refuse(
            Code::NotFound,
            format!("no model {name:?} at the front"),
        ));
    };
    let index = if version.is_empty() {
        let Some(grpc) = &deployment.grpc else {
            return Err(refuse(Code::Unavailable, "the front serves no gRPC".into()));
        };
        let weights = deployment.handle.weights();
        grpc::pick(&mut grpc.current.lock(), &weights).and_then(|i| {
            deployment
                .versions
                .iter()
                .position(|(v, _)| *v == weights[i].0)
        })
    } else {
        deployment.versions.iter().position(|(v, _)| v == version)
    };
    match index {
        Some(i) => Ok((deployment, i)),
        None if version.is_empty() => Err(refuse(
            Code::Unavailable,
            format!("model {name:?}: no version has weight"),
        )),
        None => Err(refuse(
            Code::NotFound,
            format!("model {name:?} has no version {version:?}"),
        )),
    }
}

#[derive(serde::Serialize)]
struct EndpointView {
    id: String,
    addr: String,
    version: String,
    draining: bool,
    ejected: bool,
    serving: bool,
}

async fn endpoints(State(front): State<Arc<Front>>) -> Json<Vec<EndpointView>> {
    Json(
        front
            .endpoints()
            .into_iter()
            .map(|s| EndpointView {
                id: s.endpoint.id,
                addr: s.endpoint.addr.to_string(),
                version: s.endpoint.version,
                draining: s.endpoint.state == EndpointState::Draining,
                ejected: s.ejected,
                serving: s.serving,
            })
            .collect(),
    )
}

#[derive(serde::Serialize)]
struct VersionView {
    name: String,
    weight: f64,
    serving: usize,
    waiting: usize,
    desired: Option<u32>,
}

#[derive(serde::Serialize)]
struct DeploymentView {
    name: String,
    versions: Vec<VersionView>,
    rollout: Option<String>,
}

async fn deployments_view(State(front): State<Arc<Front>>) -> Json<Vec<DeploymentView>> {
    Json(
        front
            .deployments
            .iter()
            .map(|d| {
                let weights = d.handle.weights();
                DeploymentView {
                    name: d.name.clone(),
                    versions: d
                        .versions
                        .iter()
                        .map(|(v, cold)| VersionView {
                            name: v.clone(),
                            weight: weights
                                .iter()
                                .find(|(n, _)| n == v)
                                .map_or(0.0, |(_, w)| *w),
                            serving: d.pool.serving(v),
                            waiting: cold.waiting(),
                            desired: d
                                .autoscaler(v)
                                .and_then(|a| a.last_decision())
                                .map(|x| x.desired),
                        })
                        .collect(),
                    rollout: d.rollout.as_ref().map(|r| format!("{:?}", r.state())),
                }
            })
            .collect(),
    )
}

async fn metrics_text() -> Response {
    (
        [("content-type", "text/plain; version=0.0.4")],
        crate::http::prometheus().render(),
    )
        .into_response()
}

fn unavailable(message: String) -> Response {
    let mut rsp = (StatusCode::SERVICE_UNAVAILABLE, message).into_response();
    rsp.headers_mut()
        .insert("retry-after", HeaderValue::from_static("1"));
    rsp
}

/// A body that could not be read: 413 when it is over `limit`, 400 when
/// the client broke it off or framed it wrongly.
fn body_error(e: &axum::Error, limit: usize) -> Response {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if s.is::<http_body_util::LengthLimitError>() {
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body over the front's limit of {limit} bytes"),
            )
                .into_response();
        }
        source = s.source();
    }
    (
        StatusCode::BAD_REQUEST,
        format!("cannot read the request body: {e}"),
    )
        .into_response()
}

async fn forward(State(front): State<Arc<Front>>, req: Request) -> Response {
    let Some(deployment) = front.deployment_for(req.uri().path()) else {
        return (
            StatusCode::NOT_FOUND,
            format!("no model at {}", req.uri().path()),
        )
            .into_response();
    };
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, front.body_limit).await {
        Ok(b) => b,
        Err(e) => return body_error(&e, front.body_limit),
    };
    let req = http::Request::from_parts(parts, Full::new(bytes));
    if let Some(v) = PinVersion.backend(&req).filter(|_| !front.catch_all) {
        if !deployment.versions.iter().any(|(name, _)| name == v) {
            return (
                StatusCode::NOT_FOUND,
                format!("model {:?} has no version {v:?}", deployment.name),
            )
                .into_response();
        }
    }
    let answer = tokio::time::timeout(front.request_timeout, deployment.split.clone().oneshot(req));
    let Ok(answer) = answer.await else {
        return (
            StatusCode::GATEWAY_TIMEOUT,
            format!("no answer from a node within {:?}", front.request_timeout),
        )
            .into_response();
    };
    match answer {
        Ok(rsp) => rsp.map(Body::new),
        Err(e) if e.is::<NodeFailed<hyper::body::Incoming>>() => {
            match e
                .downcast_ref::<NodeFailed<hyper::body::Incoming>>()
                .and_then(NodeFailed::take)
            {
                Some(rsp) => rsp.map(Body::new),
                None => (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
            }
        }
        Err(e) if e.is::<NoReadyReplica>() => unavailable("no ready node".into()),
        Err(e) if e.is::<NoNode>() => unavailable(e.to_string()),
        Err(e) => (StatusCode::BAD_GATEWAY, format!("node: {e}")).into_response(),
    }
}
