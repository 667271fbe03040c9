//! One deployment: every request takes the same path through the four
//! convoy crates, and no path goes around them.
//!
//! ```text
//! convoy-router Split (versions by weight, sticky key, header override;
//!                      a Rollout moves the weights)
//!   ─► per version: Counted (requests, errors, latency per model/version)
//!   ─► convoy-autoscale LoadObserver (the latency callers feel)
//!   ─► convoy-router Balancer (p2c over the version's ready replicas)
//!   ─► convoy-autoscale ReplicaSet (autoscaled by LatencySlo, TargetOngoing
//!      or Adaptive)
//!   ─► per replica: convoy-batcher Batch (keyed by sequence-length bucket
//!      for text, cost = rows, deadline = the request's)
//!   ─► convoy-gpu-pool: the version's tenant lease for every batch
//!   ─► Forward (the model version, shared by its replicas)
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_autoscale::signal::Observe;
use convoy_autoscale::{
    Adaptive, Autoscaler, AutoscalerHandle, BatcherSet, Engine, EngineConfig, LatencySlo,
    LatencySloConfig, Layered, LoadObserver, ReplicaSet, ReplicaSetConfig, Scaler, TargetOngoing,
    TargetOngoingConfig,
};
use convoy_batcher::{BatchConfig, BatchHandle, BatchLayer, BatchStats, OverflowPolicy};
use convoy_gpu_pool::{GpuPool, Share, Tenant};
use convoy_router::balance::BalanceConfig;
use convoy_router::rollout::{LatencyCheck, LatencyLimit};
use convoy_router::split::Override;
use convoy_router::{Balancer, Rollout, RolloutConfig, RolloutHandle, Split, SplitHandle};
use example_models::ContractError;
use example_tensor::NamedTensor;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::config::{Batching, DeploymentConfig, DeviceKind, P99Limit, Policy, RolloutPlan};
use crate::model::{Forward, Kind};

/// One request on its way through a deployment.
///
/// Cloning is cheap (the tensors are shared): the batcher keeps a copy of
/// every item of a batch so that, when the model fails the batch as a
/// whole, it can run the halves again and fail only the bad item.
#[derive(Debug, Clone)]
pub struct Item {
    /// The request's input tensors (leading dimension: its rows), shared
    /// with the batcher's copy.
    pub inputs: Arc<Vec<NamedTensor>>,
    /// Requests with equal keys share a batch (sequence-length bucket).
    pub key: u64,
    /// Its cost in the batch: rows.
    pub cost: u64,
    /// Answered 504 unserved if still queued then.
    pub deadline: Option<Instant>,
    /// The version it is pinned to (`x-convoy-version`).
    pub pinned: Option<String>,
    /// Sticky key: equal keys stay on one version.
    pub sticky: Option<u64>,
}

impl Item {
    /// An item for `inputs` with its cost (rows of the first input) and
    /// key (for text models: the power-of-two bucket of the sequence length).
    pub fn new(inputs: Vec<NamedTensor>, kind: Kind) -> Self {
        let rows = inputs.first().map_or(1, |t| t.tensor.rows()).max(1);
        let key = match kind {
            Kind::Embed => inputs
                .first()
                .and_then(|t| t.tensor.shape.get(1).copied())
                .map_or(0, |len| len.max(1).next_power_of_two() as u64),
            _ => 0,
        };
        Self {
            inputs: Arc::new(inputs),
            key,
            cost: rows as u64,
            deadline: None,
            pinned: None,
            sticky: None,
        }
    }
}

/// A deployment's answer: which version computed it, and the outputs.
#[derive(Debug)]
pub struct Answer {
    /// The version that answered.
    pub version: Arc<str>,
    /// The request's output tensors.
    pub outputs: Vec<NamedTensor>,
}

/// The version named by `x-convoy-version`, if any.
#[derive(Debug, Clone, Copy)]
struct Pinned;

impl Override<Item> for Pinned {
    fn backend<'a>(&'a self, req: &'a Item) -> Option<&'a str> {
        req.pinned.as_deref()
    }
}

/// A replica: a batcher in front of the version's model.
pub type Replica = convoy_batcher::Batch<Item, Vec<NamedTensor>>;

/// One version's service: its replicas behind a balancer, observed and
/// counted.
pub type VersionService = Counted<Observe<Balancer<Item, Vec<NamedTensor>>>>;

/// A version as the split sees it: its [`VersionService`], or that service
/// with a mirror to the stable version while it is a canary with a drift
/// check (see [`crate::rollout`]).
pub type Backend = tower::util::BoxCloneSyncService<Item, Answer, BoxError>;

/// One model version: its model, replicas, autoscaler, observer and tenant.
#[derive(Debug)]
pub struct Version {
    /// `1`, `2`...
    pub name: Arc<str>,
    /// The loaded model (shared by all replicas).
    pub model: Arc<dyn Forward>,
    /// The replicas.
    pub replicas: ReplicaSet<Replica>,
    /// What the version's callers feel.
    pub observer: LoadObserver,
    /// Stops the version's autoscaler.
    pub autoscaler: AutoscalerHandle,
    /// The version's share of the device pool.
    pub tenant: Tenant,
    /// The batchers of every replica ever started (for statistics).
    batchers: Arc<Mutex<Vec<BatchHandle>>>,
    /// The version's service (a mirror target for a canary's drift check).
    pub(crate) service: VersionService,
}

impl Version {
    /// Summed statistics of this version's batchers.
    pub fn batch_stats(&self) -> BatchTotals {
        let handles = self.batchers.lock().clone();
        let all: Vec<BatchStats> = handles.iter().map(BatchHandle::stats).collect();
        BatchTotals::of(&all)
    }
}

/// The statistics of a version's batchers together.
#[derive(Debug, Clone, Default, Serialize)]
pub struct BatchTotals {
    /// Requests admitted.
    pub requests: u64,
    /// Batches dispatched.
    pub batches: u64,
    /// Requests answered by the model.
    pub completed: u64,
    /// Requests refused (queue full, deadline, closed).
    pub rejected: u64,
    /// Mean items per batch over all batches.
    pub mean_batch_size: f64,
    /// Largest batch among recent ones.
    pub max_recent_batch_size: f64,
    /// Queued now.
    pub queue_depth: usize,
    /// The batch size cap in force now (the adaptive cap when on).
    pub current_max_batch_size: usize,
    /// Extra forward passes run to isolate a failing request (a batch the
    /// model failed as a whole, run again in halves).
    pub isolation_passes: u64,
    /// Requests that failed alone after isolation (their batch-mates were
    /// answered).
    pub isolated_failures: u64,
}

impl BatchTotals {
    fn of(all: &[BatchStats]) -> Self {
        let mut t = BatchTotals::default();
        for s in all {
            t.requests += s.admitted_total;
            t.batches += s.batches_total;
            t.completed += s.completed_total;
            t.rejected += s.rejected_total();
            t.queue_depth += s.queue_depth;
            t.max_recent_batch_size = t.max_recent_batch_size.max(s.batch_size.max);
            t.current_max_batch_size = t.current_max_batch_size.max(s.max_batch_size);
            t.isolation_passes += s.isolation_passes_total;
            t.isolated_failures += s.isolated_failures_total;
        }
        if t.batches > 0 {
            t.mean_batch_size = t.completed as f64 / t.batches as f64;
        }
        t
    }
}

/// A deployment: its versions behind a split.
#[derive(Debug)]
pub struct Deployment {
    /// The deployment's configuration.
    pub config: DeploymentConfig,
    /// The model kind (the same for every version).
    pub kind: Kind,
    /// The split between versions.
    pub split: Split<Backend, Item>,
    /// Live weights of the split.
    pub handle: SplitHandle<Backend>,
    /// The versions: the configuration's, or the registry's (the serving
    /// one first, a canary beside it while a rollout runs).
    versions: parking_lot::RwLock<Vec<Arc<Version>>>,
    /// The rollout in progress or the last one, and registry news.
    pub status: Arc<crate::rollout::Status>,
    /// Where new versions' tenants come from.
    pool: GpuPool,
    /// Background work (registry watcher, rollouts), stopped on shutdown.
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

/// The batcher settings of a replica.
///
/// The adaptive cap (`batching.adaptive`, on by default) goes here once
/// `BatchConfig`'s builder offers it; until then the configured
/// `max_batch_size` is a fixed cap.
pub fn batch_config(name: &str, b: &Batching) -> Result<BatchConfig, BoxError> {
    Ok(BatchConfig::builder()
        .name(name)
        .max_batch_size(b.max_batch_size)
        .max_batch_cost(b.max_batch_size as u64)
        .max_wait(b.max_wait)
        .max_concurrent_batches(b.max_concurrent_batches)
        .queue_capacity(b.queue_capacity)
        .queue_timeout(b.queue_timeout)
        .overflow(OverflowPolicy::Reject)
        .adaptive_batch_size(b.adaptive)
        .failure_isolation(b.failure_isolation)
        .build()?)
}

fn replica(
    label: &str,
    cfg: &Batching,
    model: Arc<dyn Forward>,
    tenant: Tenant,
) -> Result<Replica, BoxError> {
    let layer = BatchLayer::<Item, Vec<NamedTensor>>::new(batch_config(label, cfg)?)
        .key_fn(|i: &Item| i.key)
        .cost_fn(|i: &Item| i.cost)
        .deadline_fn(|i: &Item| i.deadline)
        // One bad request fails alone: a batch the model fails as a whole
        // is bisected until the failing item is alone.
        .isolate_failures();
    let label: Arc<str> = label.into();
    Ok(layer.layer(tower::service_fn(move |batch: Vec<Item>| {
        let (model, tenant, label) = (Arc::clone(&model), tenant.clone(), Arc::clone(&label));
        async move {
            // A compute slot, weighted fair across the pool's tenants.
            let _lease = tenant.lease().await?;
            metrics::histogram!("convoy_server_batch_size", "deployment" => label.to_string())
                .record(batch.len() as f64);
            // The model takes the tensors by value; while the batcher keeps
            // a copy for a retry this copies them (the model joins them
            // into one batch tensor anyway).
            let inputs: Vec<Vec<NamedTensor>> = batch
                .into_iter()
                .map(|i| Arc::unwrap_or_clone(i.inputs))
                .collect();
            model.forward(inputs).await
        }
    })))
}

/// The autoscaling policy each version of `cfg` runs.
pub fn policy(cfg: &DeploymentConfig) -> Result<Box<dyn convoy_autoscale::Policy>, BoxError> {
    let r = &cfg.replicas;
    Ok(match r.policy {
        Policy::LatencySlo => Box::new(LatencySlo::new(LatencySloConfig::default().target(r.slo))?),
        Policy::TargetOngoing => Box::new(TargetOngoing::new(
            TargetOngoingConfig::default().target_ongoing_requests(r.target_ongoing),
        )?),
        Policy::Adaptive => Box::new(Adaptive::for_slo(r.slo)?),
    })
}

/// The engine around a version's policy: the configured bounds, no upscale
/// delay, and a 60 s downscale delay, except for Adaptive, which holds
/// scale-downs itself (convoy-autoscale-sim runs it so in its verdict).
pub fn engine_config(cfg: &DeploymentConfig, label: &str) -> EngineConfig {
    let downscale_delay = match cfg.replicas.policy {
        Policy::Adaptive => Duration::ZERO,
        Policy::LatencySlo | Policy::TargetOngoing => Duration::from_secs(60),
    };
    EngineConfig::default()
        .name(label)
        .min_replicas(cfg.replicas.min)
        .max_replicas(cfg.replicas.max)
        .upscale_delay(Duration::ZERO)
        .downscale_delay(downscale_delay)
}

fn share(cfg: &DeploymentConfig, on_gpu: bool) -> Share {
    let share = if on_gpu {
        Share::fraction(cfg.device.fraction)
    } else {
        // The model's memory is the host's; the tenant gates compute and
        // carries the pool buffers a batch may take.
        Share::bytes(16 << 20)
    };
    share.compute_weight(cfg.device.compute_weight)
}

fn version(
    cfg: &DeploymentConfig,
    name: &str,
    model: Arc<dyn Forward>,
    pool: &GpuPool,
) -> Result<(Version, VersionService), BoxError> {
    let label = format!("{}/{}", cfg.name, name);
    let on_gpu = model.device().starts_with("cuda");
    let tenant = pool.tenant(label.clone(), share(cfg, on_gpu))?;
    let batchers: Arc<Mutex<Vec<BatchHandle>>> = Arc::default();
    // What happens behind the front door (queue, batch cost), for Adaptive.
    let behind = BatcherSet::new();
    let (bcfg, rmodel, rtenant, rbatchers, rbehind, rlabel) = (
        cfg.batching.clone(),
        Arc::clone(&model),
        tenant.clone(),
        Arc::clone(&batchers),
        behind.clone(),
        label.clone(),
    );
    let start_delay = cfg.identity_start_delay;
    let replicas = ReplicaSet::new(
        ReplicaSetConfig::default().max_replicas(cfg.replicas.max),
        move || {
            let made = replica(&rlabel, &bcfg, Arc::clone(&rmodel), rtenant.clone());
            if let Ok(r) = &made {
                rbatchers.lock().push(r.handle());
                rbehind.add(r.handle());
            }
            async move {
                if !start_delay.is_zero() {
                    tokio::time::sleep(start_delay).await;
                }
                made
            }
        },
    )?;
    let observer = LoadObserver::new();
    let balancer = Balancer::new(replicas.discover(), BalanceConfig::default())?;
    let service = Counted::new(
        &cfg.name,
        name,
        tower::Layer::layer(&observer.layer(), balancer),
    );
    let engine = Engine::new(engine_config(cfg, &label), policy(cfg)?)?;
    let autoscaler = Autoscaler::new(engine, replicas.clone());
    let autoscaler = match cfg.replicas.policy {
        Policy::Adaptive => autoscaler.with_source(Layered::new(observer.clone(), behind)),
        Policy::LatencySlo | Policy::TargetOngoing => autoscaler.with_source(observer.clone()),
    };
    let handle = autoscaler.handle();
    tokio::spawn(autoscaler.run());
    Ok((
        Version {
            name: name.into(),
            model,
            replicas,
            observer,
            autoscaler: handle,
            tenant,
            batchers,
            service: service.clone(),
        },
        service,
    ))
}

impl Deployment {
    /// Builds a deployment over its loaded models (one per version, in the
    /// configuration's order). Needs a tokio runtime.
    pub fn new(
        config: DeploymentConfig,
        models: Vec<Arc<dyn Forward>>,
        pool: &GpuPool,
    ) -> Result<Self, BoxError> {
        assert_eq!(models.len(), config.versions.len(), "one model per version");
        let kind = models[0].kind();
        let mut builder = Split::builder()
            .name(config.name.as_str())
            .sticky_by(|i: &Item| i.sticky)
            .override_with(Pinned);
        let mut versions = Vec::new();
        for (i, (v, model)) in config.versions.iter().zip(models).enumerate() {
            if model.kind() != kind {
                return Err(format!(
                    "deployment {}: version {} is a {:?} model, version {} a {:?} one",
                    config.name,
                    v.name,
                    model.kind(),
                    config.versions[0].name,
                    kind
                )
                .into());
            }
            let (version, service) = version(&config, &v.name, model, pool)?;
            // With a rollout plan, traffic starts on the stable version.
            let weight = match (&config.rollout, i) {
                (Some(_), 0) => 100.0,
                (Some(_), _) => 0.0,
                (None, _) => v.weight,
            };
            builder = builder.backend(v.name.as_str(), Backend::new(service), weight);
            versions.push(Arc::new(version));
        }
        let (split, handle) = builder.build()?;
        let status = Arc::new(crate::rollout::Status::default());
        if let (Some(plan), None) = (&config.rollout, &config.registry) {
            let (stable, canary) = (&config.versions[0].name, &config.versions[1].name);
            status.begin(stable, canary, plan.steps.len());
            status.attach(start_rollout(&config, plan, handle.clone(), &status)?);
        }
        Ok(Self {
            config,
            kind,
            split,
            handle,
            versions: parking_lot::RwLock::new(versions),
            status,
            pool: pool.clone(),
            tasks: Mutex::default(),
        })
    }

    /// The versions now (the serving one first).
    pub fn versions(&self) -> Vec<Arc<Version>> {
        self.versions.read().clone()
    }

    /// Whether every version that gets traffic has a ready replica (a
    /// canary still starting, at weight 0, does not make the deployment
    /// unready).
    pub fn ready(&self) -> bool {
        let weights = self.handle.weights();
        self.versions.read().iter().all(|v| {
            let idle = weights.iter().any(|(n, w)| *n == *v.name && *w == 0.0);
            idle || v.replicas.replicas().ready > 0
        })
    }

    /// Checks one request's inputs against the model's contract before
    /// they join a batch: the pinned version's, or every version's (the
    /// split may send the request to any of them). A violation is the
    /// caller's error and never reaches the model.
    pub fn check(&self, inputs: &[NamedTensor], pinned: Option<&str>) -> Result<(), ContractError> {
        for v in self.versions.read().iter() {
            if pinned.is_none_or(|p| p == &*v.name) {
                v.model.contract().check(inputs)?;
            }
        }
        Ok(())
    }

    /// The version named `name`.
    pub fn version(&self, name: &str) -> Option<Arc<Version>> {
        self.versions
            .read()
            .iter()
            .find(|v| &*v.name == name)
            .cloned()
    }

    /// Builds version `name` of `model` beside the others, in the split at
    /// weight 0; `wrap` turns its service into the split's backend (a
    /// canary's mirror).
    pub(crate) fn add_version(
        &self,
        name: &str,
        model: Arc<dyn Forward>,
        wrap: impl FnOnce(VersionService) -> Backend,
    ) -> Result<Arc<Version>, BoxError> {
        if model.kind() != self.kind {
            return Err(format!(
                "deployment {}: version {name} is a {:?} model, the deployment serves {:?}",
                self.config.name,
                model.kind(),
                self.kind
            )
            .into());
        }
        if self.version(name).is_some() {
            return Err(format!("deployment {}: version {name} exists", self.config.name).into());
        }
        let (version, service) = version(&self.config, name, model, &self.pool)?;
        let version = Arc::new(version);
        if let Err(e) = self.handle.insert_backend(name, wrap(service), 0.0) {
            version.autoscaler.shutdown();
            return Err(e.into());
        }
        self.versions.write().push(Arc::clone(&version));
        Ok(version)
    }

    /// Takes version `name` out of the split, lets the requests it already
    /// admitted finish (at most `drain`), then stops it.
    pub(crate) async fn retire(&self, name: &str, drain: Duration) -> Result<(), BoxError> {
        let version = self
            .version(name)
            .ok_or_else(|| format!("deployment {}: no version {name}", self.config.name))?;
        self.handle.remove_backend(name)?;
        let started = Instant::now();
        while version.observer.in_flight() > 0 && started.elapsed() < drain {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let left = version.observer.in_flight();
        if left > 0 {
            tracing::warn!(deployment = %self.config.name, version = name, left, "retired with requests still in flight after {drain:?}");
        }
        version.autoscaler.shutdown();
        self.versions.write().retain(|v| &*v.name != name);
        Ok(())
    }

    /// Stops the autoscalers, the registry watcher and any rollout.
    pub fn shutdown(&self) {
        for t in self.tasks.lock().drain(..) {
            t.abort();
        }
        for v in self.versions.read().iter() {
            v.autoscaler.shutdown();
        }
    }
}

fn start_rollout(
    cfg: &DeploymentConfig,
    plan: &RolloutPlan,
    handle: SplitHandle<Backend>,
    status: &Arc<crate::rollout::Status>,
) -> Result<RolloutHandle, BoxError> {
    let config = rollout_config(
        plan,
        cfg.versions[0].name.clone(),
        cfg.versions[1].name.clone(),
    );
    Ok(Rollout::new(handle, config)?
        .on_event(status.recorder(&cfg.name))
        .start())
}

/// The convoy-router rollout settings of `plan`, from `stable` to `canary`.
pub fn rollout_config(plan: &RolloutPlan, stable: String, canary: String) -> RolloutConfig {
    RolloutConfig {
        stable,
        canary,
        steps: plan.steps.clone(),
        min_step_duration: plan.step,
        analysis_interval: plan.analysis_interval,
        min_samples: plan.min_samples,
        max_error_rate: plan.max_error_rate,
        latency: Some(LatencyCheck {
            quantile: 0.99,
            limit: match plan.latency {
                P99Limit::Absolute(d) => LatencyLimit::Absolute(d),
                P99Limit::StableFactor(f) => LatencyLimit::StableFactor(f),
            },
        }),
        failure_limit: plan.failure_limit,
        rollback_steps: plan.rollback_steps,
        rollback_interval: plan.rollback_interval,
    }
}

/// Counts requests and errors and records latency per model and version
/// (`convoy_server_requests_total`, `convoy_server_errors_total`,
/// `convoy_server_request_seconds`), and tags the answer with its version.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    model: Arc<str>,
    version: Arc<str>,
}

impl<S> Counted<S> {
    fn new(model: &str, version: &str, inner: S) -> Self {
        Self {
            inner,
            model: model.into(),
            version: version.into(),
        }
    }
}

impl<S> Service<Item> for Counted<S>
where
    S: Service<Item, Response = Vec<NamedTensor>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, item: Item) -> Self::Future {
        let start = Instant::now();
        let (model, version) = (self.model.to_string(), self.version.to_string());
        let answer = self.inner.call(item);
        let tag = Arc::clone(&self.version);
        Box::pin(async move {
            let result = answer.await.map_err(Into::into);
            let labels = [("model", model), ("version", version)];
            metrics::counter!("convoy_server_requests_total", &labels).increment(1);
            metrics::histogram!("convoy_server_request_seconds", &labels)
                .record(start.elapsed().as_secs_f64());
            if result.is_err() {
                metrics::counter!("convoy_server_errors_total", &labels).increment(1);
            }
            result.map(|outputs| Answer {
                version: tag,
                outputs,
            })
        })
    }
}

/// Where a deployment's models run: the GPU when asked (an error without
/// one) or, with `auto`, when the pool found one.
pub fn wants_gpu(kind: DeviceKind, pool: &GpuPool) -> Result<bool, BoxError> {
    let has_gpu = pool.backend_kind() == convoy_gpu_pool::BackendKind::Cuda;
    match kind {
        DeviceKind::Cpu => Ok(false),
        DeviceKind::Auto => Ok(has_gpu),
        DeviceKind::Gpu if has_gpu => Ok(true),
        DeviceKind::Gpu => Err(format!(
            "device.kind = \"gpu\" but there is no GPU ({})",
            pool.fallback_reason().unwrap_or("no CUDA backend")
        )
        .into()),
    }
}
