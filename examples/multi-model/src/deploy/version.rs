//! One model version: its model, replicas, autoscaler and tenant, built
//! from the deployment's configuration.

use std::sync::Arc;

use convoy_autoscale::{
    Autoscaler, AutoscalerHandle, BatcherSet, Engine, Layered, LoadObserver, ReplicaSet,
    ReplicaSetConfig,
};
use convoy_batcher::{BatchHandle, BatchStats};
use convoy_gpu_pool::{GpuPool, Tenant};
use convoy_router::balance::BalanceConfig;
use convoy_router::Balancer;
use parking_lot::Mutex;
use serde::Serialize;
use tower::BoxError;

use super::stack::{engine_config, policy, replica, share};
use super::{Counted, Replica, VersionService};
use crate::config::{DeploymentConfig, Policy};
use crate::model::Forward;

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
    /// Batches that failed past the tenant's memory quota (each split and
    /// run again by isolation).
    pub quota_failed_batches: u64,
    /// The largest batch the replicas learned fits in the quota (the
    /// smallest over the replicas), when a batch failed past it.
    pub size_limit: Option<usize>,
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
            t.current_max_batch_size = t.current_max_batch_size.max(s.batch_size_cap);
            t.isolation_passes += s.isolation_passes_total;
            t.isolated_failures += s.isolated_failures_total;
            t.quota_failed_batches += s.too_large_batches_total;
            if let Some(l) = s.size_limit.filter(|&l| l < s.max_batch_size) {
                t.size_limit = Some(t.size_limit.map_or(l, |m: usize| m.min(l)));
            }
        }
        if t.batches > 0 {
            t.mean_batch_size = t.completed as f64 / t.batches as f64;
        }
        t
    }
}

pub(super) fn version(
    cfg: &DeploymentConfig,
    name: &str,
    model: Arc<dyn Forward>,
    pool: &GpuPool,
) -> Result<(Version, VersionService), BoxError> {
    let label = format!("{}/{}", cfg.name, name);
    let on_gpu = model.device().starts_with("cuda");
    // A TorchScript model was loaded into its version's tenant (its
    // weights are charged there already): the version uses that one.
    let tenant = match model.torch().and_then(|t| t.tenant()) {
        Some(t) if t.name() == label => t.clone(),
        Some(t) => {
            return Err(format!(
                "version {label}: its model is charged to tenant {}",
                t.name()
            )
            .into())
        }
        None => pool.tenant(label.clone(), share(cfg, on_gpu))?,
    };
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
    )
    .with_drift(crate::drift::monitor_for(cfg, model.kind())?);
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
