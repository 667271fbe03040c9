//! All four convoy crates in one axum app, along the data flow of
//! the repository's `docs/ARCHITECTURE.md`:
//!
//! ```text
//! POST /infer ─► convoy-router Split (v1/v2 by weight, sticky by user,
//!                 `x-convoy-version` override; a Rollout moves the weights)
//!   ─► per version: convoy-autoscale LoadObserver (the p99 callers feel)
//!   ─► convoy-router Balancer (p2c over the version's ready replicas)
//!   ─► convoy-autoscale ReplicaSet (replicas added and removed by a
//!      LatencySlo autoscaler fed by the observer)
//!   ─► per replica: convoy-batcher Batch (batch-when-busy)
//!   ─► convoy-gpu-pool: the version's tenant (its share of compute slots,
//!      its memory quota) for every batch
//!   ─► the model (simulated here: a fixed cost per batch plus a cost per item)
//! ```
//!
//! The model is a stand-in with a known cost so the example runs anywhere
//! (and in paused time in the tests); in production it is a forward pass on
//! the leased stream.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use convoy_autoscale::signal::Observe;
use convoy_autoscale::{
    Autoscaler, AutoscalerHandle, Engine, EngineConfig, LatencySlo, LatencySloConfig, LoadObserver,
    ReplicaSet, ReplicaSetConfig, Scaler,
};
use convoy_batcher::{batch_fn, Batch, BatchConfig, DeadlineExceeded, QueueFull};
use convoy_gpu_pool::{GpuPool, PoolConfig, QuotaExceeded, Share, Tenant};
use convoy_router::balance::BalanceConfig;
use convoy_router::rollout::{LatencyCheck, LatencyLimit};
use convoy_router::split::Override;
use convoy_router::{
    Balancer, NoReadyReplica, Rollout, RolloutConfig, RolloutHandle, Split, SplitHandle,
};
use serde::{Deserialize, Serialize};
use tower::{BoxError, Layer, ServiceExt};

/// The header that pins a request to a version (for testers).
pub const VERSION_HEADER: &str = "x-convoy-version";

/// Most features one request may carry.
pub const MAX_FEATURES: usize = 4096;

/// How the stack is built.
#[derive(Debug, Clone)]
pub struct StackConfig {
    /// Cost of one batch: `batch_cost + item_cost · n`.
    pub batch_cost: Duration,
    /// Cost per item of a batch.
    pub item_cost: Duration,
    /// Most items in one batch.
    pub max_batch_size: usize,
    /// Time a replica takes to start (load weights, warm up).
    pub cold_start: Duration,
    /// The p99 latency each version's autoscaler keeps callers under.
    pub slo: Duration,
    /// Replicas per version, at least and at most.
    pub replicas: (u32, u32),
    /// Each version's fraction of the GPU pool.
    pub gpu_fraction: f64,
    /// Host memory of the pool when there is no GPU.
    pub host_capacity: u64,
}

impl Default for StackConfig {
    fn default() -> Self {
        Self {
            batch_cost: Duration::from_millis(10),
            item_cost: Duration::from_millis(1),
            max_batch_size: 16,
            cold_start: Duration::from_secs(1),
            slo: Duration::from_millis(100),
            replicas: (1, 8),
            gpu_fraction: 0.45,
            host_capacity: 256 << 20,
        }
    }
}

/// A request body.
#[derive(Debug, Clone, Deserialize)]
pub struct InferRequest {
    /// Who asks (the sticky key: a user stays on one version).
    pub user: u64,
    /// Model input.
    pub features: Vec<f32>,
}

/// A response body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InferResponse {
    /// The version that answered.
    pub version: String,
    /// The model's output.
    pub score: f32,
}

/// What travels through the split: the request and the version it is
/// pinned to, if any.
#[derive(Debug, Clone)]
pub struct Input {
    /// The request.
    pub request: InferRequest,
    /// From the `x-convoy-version` header.
    pub pinned: Option<String>,
}

/// The version named by `x-convoy-version`, if any.
#[derive(Debug, Clone, Copy)]
struct Pinned;

impl Override<Input> for Pinned {
    fn backend<'a>(&'a self, req: &'a Input) -> Option<&'a str> {
        req.pinned.as_deref()
    }
}

/// One version's service: observed, then balanced over its replicas.
pub type VersionService = Observe<Balancer<Input, InferResponse>>;

/// One model version: its replicas, autoscaler and observer.
#[derive(Debug)]
pub struct Version {
    /// `v1`, `v2`.
    pub name: String,
    /// The replicas (each a batcher in front of the model).
    pub replicas: ReplicaSet<Batch<Input, InferResponse>>,
    /// What the version's callers feel.
    pub observer: LoadObserver,
    /// Stops the version's autoscaler.
    pub autoscaler: AutoscalerHandle,
    /// The version's share of the GPU pool.
    pub tenant: Tenant,
}

/// The whole stack.
#[derive(Debug)]
pub struct Stack {
    /// The split between versions.
    pub split: Split<VersionService, Input>,
    /// Live weights of the split.
    pub handle: SplitHandle<VersionService>,
    /// The versions, in the split's order.
    pub versions: Vec<Version>,
    /// The device pool the versions share.
    pub pool: GpuPool,
}

/// A replica: a batcher in front of the simulated model, every batch under
/// the version's GPU tenant.
fn replica(
    version: Arc<str>,
    tenant: Tenant,
    cfg: &StackConfig,
) -> Result<Batch<Input, InferResponse>, BoxError> {
    let config = BatchConfig::builder()
        .name(&*version)
        .max_batch_size(cfg.max_batch_size)
        .queue_capacity(4 * cfg.max_batch_size)
        .queue_timeout(cfg.slo * 10)
        .build()?;
    let (fixed, per_item) = (cfg.batch_cost, cfg.item_cost);
    let scale = if &*version == "v1" { 1.0 } else { 1.1 };
    Ok(batch_fn(config, move |batch: Vec<Input>| {
        let (tenant, version) = (tenant.clone(), Arc::clone(&version));
        async move {
            // A compute slot (weighted fair across versions) and a stream.
            let lease = tenant.lease().await?;
            // Activations for the batch, inside the version's quota, on the
            // lease's stream.
            let _activations = lease.alloc((batch.len() as u64 * 16) << 10)?;
            tokio::time::sleep(fixed + per_item * batch.len() as u32).await;
            let out: Vec<InferResponse> = batch
                .iter()
                .map(|x| InferResponse {
                    version: version.to_string(),
                    score: scale * x.request.features.iter().sum::<f32>(),
                })
                .collect();
            Ok::<_, BoxError>(out)
        }
    }))
}

fn version(
    name: &str,
    pool: &GpuPool,
    cfg: &StackConfig,
) -> Result<(Version, VersionService), BoxError> {
    let tenant = pool.tenant(name, Share::fraction(cfg.gpu_fraction))?;
    let label: Arc<str> = name.into();
    let (rcfg, cold_start) = (cfg.clone(), cfg.cold_start);
    let replica_tenant = tenant.clone();
    let replicas = ReplicaSet::new(
        ReplicaSetConfig::default().max_replicas(cfg.replicas.1),
        move || {
            let made = replica(Arc::clone(&label), replica_tenant.clone(), &rcfg);
            async move {
                tokio::time::sleep(cold_start).await;
                made
            }
        },
    )?;
    let observer = LoadObserver::new();
    let balancer = Balancer::new(replicas.discover(), BalanceConfig::default())?;
    let service = observer.layer().layer(balancer);
    let engine = Engine::new(
        EngineConfig::default()
            .name(name)
            .min_replicas(cfg.replicas.0)
            .max_replicas(cfg.replicas.1)
            .upscale_delay(Duration::ZERO)
            .downscale_delay(Duration::from_secs(30)),
        Box::new(LatencySlo::new(
            LatencySloConfig::default().target(cfg.slo),
        )?),
    )?;
    let autoscaler = Autoscaler::new(engine, replicas.clone()).with_source(observer.clone());
    let handle = autoscaler.handle();
    tokio::spawn(autoscaler.run());
    Ok((
        Version {
            name: name.to_string(),
            replicas,
            observer,
            autoscaler: handle,
            tenant,
        },
        service,
    ))
}

impl Stack {
    /// Builds v1 (all traffic) and v2 (none yet) on a pool on the first GPU,
    /// or on host memory without one. Needs a tokio runtime (autoscalers and
    /// balancers run as tasks).
    pub fn new(cfg: &StackConfig) -> Result<Self, BoxError> {
        let pool = GpuPool::auto(PoolConfig::default().host_capacity(cfg.host_capacity))?;
        tracing::info!(backend = %pool.backend_kind(), reason = ?pool.fallback_reason(), "gpu pool");
        let (v1, s1) = version("v1", &pool, cfg)?;
        let (v2, s2) = version("v2", &pool, cfg)?;
        let (split, handle) = Split::builder()
            .name("model")
            .backend("v1", s1, 100.0)
            .backend("v2", s2, 0.0)
            .sticky_by(|x: &Input| Some(x.request.user))
            .override_with(Pinned)
            .build()?;
        Ok(Self {
            split,
            handle,
            versions: vec![v1, v2],
            pool,
        })
    }

    /// Starts moving traffic from v1 to v2 through `steps` (percent), each
    /// held at least `step`, promoting while v2's error rate stays under 1 %
    /// and its p99 under twice v1's, rolling back otherwise.
    pub fn rollout(&self, steps: Vec<f64>, step: Duration) -> Result<RolloutHandle, BoxError> {
        let config = RolloutConfig {
            stable: "v1".into(),
            canary: "v2".into(),
            steps,
            min_step_duration: step,
            analysis_interval: step / 5,
            min_samples: 50,
            max_error_rate: 0.01,
            latency: Some(LatencyCheck {
                quantile: 0.99,
                limit: LatencyLimit::StableFactor(2.0),
            }),
            failure_limit: 3,
            rollback_steps: 4,
            rollback_interval: step / 2,
        };
        Ok(Rollout::new(self.handle.clone(), config)?
            .on_event(|e| {
                tracing::info!(kind = ?e.kind, percent = e.canary_percent, reason = %e.reason, "rollout")
            })
            .start())
    }

    /// The axum app: `POST /infer`, `GET /stats`.
    pub fn app(&self) -> Router {
        let state = AppState {
            split: self.split.clone(),
            handle: self.handle.clone(),
            versions: self
                .versions
                .iter()
                .map(|v| VersionState {
                    name: v.name.clone(),
                    replicas: v.replicas.clone(),
                    observer: v.observer.clone(),
                    tenant: v.tenant.clone(),
                })
                .collect(),
            backend: self.pool.backend_kind().to_string(),
        };
        Router::new()
            .route("/infer", post(infer))
            .route("/stats", get(stats))
            .with_state(Arc::new(state))
    }

    /// Stops the autoscalers.
    pub fn shutdown(&self) {
        for v in &self.versions {
            v.autoscaler.shutdown();
        }
    }
}

struct VersionState {
    name: String,
    replicas: ReplicaSet<Batch<Input, InferResponse>>,
    observer: LoadObserver,
    tenant: Tenant,
}

struct AppState {
    split: Split<VersionService, Input>,
    handle: SplitHandle<VersionService>,
    versions: Vec<VersionState>,
    backend: String,
}

type Failure = (StatusCode, String);

fn caused_by<E: std::error::Error + 'static>(e: &BoxError) -> bool {
    std::iter::successors(Some(&**e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<E>())
}

async fn infer(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    Json(request): Json<InferRequest>,
) -> Result<Json<InferResponse>, Failure> {
    if request.features.is_empty() || request.features.len() > MAX_FEATURES {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            format!(
                "features: 1 to {MAX_FEATURES} values, got {}",
                request.features.len()
            ),
        ));
    }
    if request.features.iter().any(|x| !x.is_finite()) {
        return Err((
            StatusCode::UNPROCESSABLE_ENTITY,
            "features must be finite".into(),
        ));
    }
    let pinned = match headers.get(VERSION_HEADER) {
        None => None,
        Some(v) => {
            let v = v.to_str().unwrap_or_default();
            if state.handle.backend(v).is_none() {
                return Err((
                    StatusCode::BAD_REQUEST,
                    format!("{VERSION_HEADER}: no version {v:?}"),
                ));
            }
            Some(v.to_string())
        }
    };
    let input = Input { request, pinned };
    state
        .split
        .clone()
        .oneshot(input)
        .await
        .map(Json)
        .map_err(|e| {
            let status = if caused_by::<QueueFull>(&e) || caused_by::<NoReadyReplica>(&e) {
                StatusCode::SERVICE_UNAVAILABLE
            } else if caused_by::<DeadlineExceeded>(&e) {
                StatusCode::GATEWAY_TIMEOUT
            } else if caused_by::<QuotaExceeded>(&e) {
                StatusCode::INSUFFICIENT_STORAGE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            (status, e.to_string())
        })
}

/// `GET /stats`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Stats {
    /// Per version: weight, requests, errors, distinct users.
    pub split: Vec<VersionStats>,
    /// Which backend the pool runs on.
    pub backend: String,
}

/// One version in [`Stats`].
#[derive(Debug, Serialize, Deserialize)]
pub struct VersionStats {
    /// `v1`, `v2`.
    pub name: String,
    /// Split weight.
    pub weight: f64,
    /// Requests routed to it.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Replicas ready now.
    pub ready_replicas: u32,
    /// Replicas starting or ready.
    pub replicas: u32,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Memory of the version's GPU tenant in use now, bytes.
    pub gpu_bytes_in_use: u64,
}

async fn stats(State(state): State<Arc<AppState>>) -> Json<Stats> {
    let snapshot = state.handle.snapshot();
    let split = state
        .versions
        .iter()
        .map(|v| {
            let b = snapshot.backends.iter().find(|b| b.name == v.name);
            let counts = v.replicas.replicas();
            VersionStats {
                name: v.name.clone(),
                weight: b.map_or(0.0, |b| b.weight),
                requests: b.map_or(0, |b| b.requests),
                errors: b.map_or(0, |b| b.errors),
                ready_replicas: counts.ready,
                replicas: counts.current,
                in_flight: v.observer.in_flight(),
                gpu_bytes_in_use: v.tenant.used(),
            }
        })
        .collect();
    Json(Stats {
        split,
        backend: state.backend.clone(),
    })
}
