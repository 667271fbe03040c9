//! A deployment: its versions behind a split, and the rollout its
//! configuration names.

use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::Scaler;
use convoy_gpu_pool::GpuPool;
use convoy_router::rollout::{LatencyCheck, LatencyLimit};
use convoy_router::{Rollout, RolloutConfig, RolloutHandle, Split, SplitHandle};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{BoxError, ServiceExt};

use super::step::{Pinned, Step};
use super::version::version;
use super::{
    Backend, Call, ItemService, NoSuchVersion, Route, Status, Task, TimedOut, Version,
    VersionService,
};
use crate::config::{DeploymentConfig, P99Limit, RolloutPlan, ServerConfig};
use crate::model::{Forward, Kind};

/// A deployment: its versions behind a split.
#[derive(Debug)]
pub struct Deployment {
    /// The deployment's configuration.
    pub config: DeploymentConfig,
    /// The model kind (the same for every version).
    pub kind: Kind,
    /// The split between versions.
    pub split: Split<Backend, Call>,
    /// Live weights of the split.
    pub handle: SplitHandle<Backend>,
    /// The versions: the configuration's, or the registry's (the serving
    /// one first, a canary beside it while a rollout runs).
    versions: parking_lot::RwLock<Vec<Arc<Version>>>,
    /// The rollout in progress or the last one, and registry news.
    pub status: Arc<Status>,
    /// Where new versions' tenants come from.
    pool: GpuPool,
    /// The server's request timeout (see [`Deployment::call`]).
    request_timeout: Duration,
    /// Background work (registry watcher, rollouts), stopped on shutdown.
    pub(crate) tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
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
            .sticky_by(|c: &Call| c.route.sticky)
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
            let (version, service) = version(&config, &v.name, Arc::clone(&model), pool)?;
            // With a rollout plan, traffic starts on the stable version.
            let weight = match (&config.rollout, i) {
                (Some(_), 0) => 100.0,
                (Some(_), _) => 0.0,
                (None, _) => v.weight,
            };
            let backend = step(&v.name, model, ItemService::new(service));
            builder = builder.backend(v.name.as_str(), backend, weight);
            versions.push(Arc::new(version));
        }
        let (split, handle) = builder.build()?;
        let status = Arc::new(Status::default());
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
            request_timeout: ServerConfig::default().request_timeout,
            tasks: Mutex::default(),
        })
    }

    /// With `timeout` as the server's request timeout (`server.request_timeout`;
    /// 30 s by default): see [`Deployment::call`].
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Runs one request: the one entry point of v1, v2 REST and v2 gRPC.
    ///
    /// `route` pins a version (an unknown one is [`NoSuchVersion`], the
    /// caller's error), or gives a sticky key; the split chooses otherwise.
    /// The version chosen runs `task`: its pre-processing by that
    /// version's rules, the model's contract (a violation is the caller's
    /// `ContractError` and never reaches the model), the forward pass and
    /// the post-processing by the same version's rules. The request ends
    /// at the earlier of the caller's deadline and the request timeout
    /// ([`TimedOut`]); the batcher drops it unserved if it is still queued
    /// then. Its errors are classified by [`crate::error::classify`].
    pub async fn call<T: Task>(
        &self,
        task: T,
        route: Route,
    ) -> Result<Served<T::Output>, BoxError> {
        if let Some(v) = &route.pinned {
            if self.version(v).is_none() {
                return Err(NoSuchVersion {
                    deployment: self.config.name.clone(),
                    version: v.clone(),
                }
                .into());
            }
        }
        let now = Instant::now();
        let own = now + self.request_timeout;
        let (deadline, by_caller) = match route.deadline {
            Some(d) if d < own => (d, true),
            _ => (own, false),
        };
        let timed_out = TimedOut {
            limit: deadline.saturating_duration_since(now),
            by_caller,
        };
        let call = Call::new(task, route, deadline);
        let reply = tokio::time::timeout_at(deadline, self.split.clone().oneshot(call))
            .await
            .map_err(|_| timed_out)??;
        let output = reply.result?.downcast::<T::Output>().map_err(|_| {
            format!(
                "deployment {}: version {} answered another type",
                self.config.name, reply.version
            )
        })?;
        Ok(Served {
            version: reply.version,
            output: *output,
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

    /// The device pool its versions' tenants come from.
    pub fn pool(&self) -> &GpuPool {
        &self.pool
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
    /// weight 0; `wrap` turns its service into what its step calls (a
    /// canary's mirror).
    pub(crate) fn add_version(
        &self,
        name: &str,
        model: Arc<dyn Forward>,
        wrap: impl FnOnce(VersionService) -> ItemService,
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
        let (version, service) = version(&self.config, name, Arc::clone(&model), &self.pool)?;
        let version = Arc::new(version);
        let backend = step(name, model, wrap(service));
        if let Err(e) = self.handle.insert_backend(name, backend, 0.0) {
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

/// What [`Deployment::call`] answers: the task's output and the version
/// that served it.
#[derive(Debug)]
pub struct Served<T> {
    /// The version that served the request.
    pub version: Arc<str>,
    /// The task's output.
    pub output: T,
}

/// Version `name`'s backend in the split: its step around `inner`.
fn step(name: &str, model: Arc<dyn Forward>, inner: ItemService) -> Backend {
    Backend::new(Step {
        version: name.into(),
        model,
        inner,
    })
}

fn start_rollout(
    cfg: &DeploymentConfig,
    plan: &RolloutPlan,
    handle: SplitHandle<Backend>,
    status: &Arc<Status>,
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
