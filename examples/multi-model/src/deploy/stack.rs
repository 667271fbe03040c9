//! The layers of one version: a replica (a batcher in front of the model,
//! each batch under the version's device lease), its autoscaling policy and
//! engine, and its share of the device pool.

use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::signal::Observe;
use convoy_autoscale::{
    Adaptive, EngineConfig, LatencySlo, LatencySloConfig, TargetOngoing, TargetOngoingConfig,
};
use convoy_batcher::{BatchConfig, BatchLayer, OverflowPolicy, SizeLimitConfig};
use convoy_gpu_pool::{GpuPool, QuotaExceeded, Share, Tenant};
use convoy_router::Balancer;
use example_tensor::NamedTensor;
use tower::{BoxError, Layer};

use super::{length_key, Call, Counted, Item, Reply};
use crate::config::{Batching, DeploymentConfig, DeviceKind, Policy};
use crate::model::Forward;

/// A replica: a batcher in front of the version's model.
pub type Replica = convoy_batcher::Batch<Item, Vec<NamedTensor>>;

/// One version's service: its replicas behind a balancer, observed and
/// counted.
pub type VersionService = Counted<Observe<Balancer<Item, Vec<NamedTensor>>>>;

/// A version as the split sees it: its step (the [`Task`](super::Task)'s pre-
/// and post-processing by this version's rules, see [`Call`]) around its
/// [`ItemService`](super::ItemService).
pub type Backend = tower::util::BoxCloneSyncService<Call, Reply, BoxError>;

/// The batcher settings of a replica: `b`'s, with the adaptive cap
/// (`batching.adaptive`, on by default) starting from the model's measured
/// `profile` (`batching.profile`; empty: from `max_batch_size`).
pub fn batch_config(
    name: &str,
    b: &Batching,
    profile: &[(usize, Duration)],
) -> Result<BatchConfig, BoxError> {
    // Without the adaptive cap there is nothing for a profile to start.
    let profile = if b.adaptive { profile } else { &[] };
    Ok(BatchConfig::builder()
        .name(name)
        .max_batch_size(b.max_batch_size)
        .max_batch_cost(b.max_batch_size as u64)
        .max_wait(b.max_wait)
        .wait_for(b.wait_for)
        .max_concurrent_batches(b.max_concurrent_batches)
        .queue_capacity(b.queue_capacity)
        .queue_timeout(b.queue_timeout)
        .overflow(OverflowPolicy::Reject)
        .adaptive_batch_size(b.adaptive)
        .adaptive_profile(profile.iter().copied())
        .failure_isolation(b.failure_isolation)
        .build()?)
}

pub(super) fn replica(
    label: &str,
    cfg: &Batching,
    model: Arc<dyn Forward>,
    tenant: Tenant,
) -> Result<Replica, BoxError> {
    let config = batch_config(label, cfg, model.batch_profile())?;
    let shortest = cfg.shortest_bucket;
    let layer = BatchLayer::<Item, Vec<NamedTensor>>::new(config)
        .key_fn(move |i: &Item| length_key(i.seq_len, shortest))
        .cost_fn(|i: &Item| i.cost)
        .deadline_fn(|i: &Item| i.deadline)
        // One bad request fails alone: a batch the model fails as a whole
        // is bisected until the failing item is alone.
        .isolate_failures()
        // A batch past the tenant's memory quota teaches the replica the
        // largest batch that fits: later bursts are formed under it (and
        // a larger one is tried again after a period of success).
        .size_limit(SizeLimitConfig::default(), |e| e.is::<QuotaExceeded>());
    let label: Arc<str> = label.into();
    Ok(layer.layer(tower::service_fn(move |batch: Vec<Item>| {
        let (model, tenant, label) = (Arc::clone(&model), tenant.clone(), Arc::clone(&label));
        async move {
            // A compute slot, weighted fair across the pool's tenants; on
            // a GPU the pass runs on the lease's stream.
            let lease = tenant.lease().await?;
            let stream = lease_stream(&tenant, lease.stream());
            metrics::histogram!("convoy_server_batch_size", "deployment" => label.to_string())
                .record(batch.len() as f64);
            // The model takes the tensors by value; while the batcher keeps
            // a copy for a retry this copies them (the model joins them
            // into one batch tensor anyway).
            let inputs: Vec<Vec<NamedTensor>> = batch
                .into_iter()
                .map(|i| Arc::unwrap_or_clone(i.inputs))
                .collect();
            model.forward_on(inputs, stream).await
        }
    })))
}

/// The CUDA stream behind a lease's pool stream, as an integer handle (on
/// a CUDA pool).
#[cfg(feature = "cuda")]
fn lease_stream(tenant: &Tenant, stream: convoy_gpu_pool::StreamId) -> Option<u64> {
    let cuda = tenant.pool().cuda()?.cuda_stream(stream)?;
    Some(cuda.cu_stream() as u64)
}

/// Without CUDA there is no stream to run on.
#[cfg(not(feature = "cuda"))]
fn lease_stream(_tenant: &Tenant, _stream: convoy_gpu_pool::StreamId) -> Option<u64> {
    None
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

/// The share of a version whose model is not a TorchScript one (the
/// identity model): a TorchScript model brings its own tenant
/// ([`model_tenant`]).
pub(super) fn share(cfg: &DeploymentConfig, on_gpu: bool) -> Share {
    let share = if on_gpu {
        Share::fraction(cfg.device.fraction)
    } else {
        // The built-in identity model allocates nothing through libtorch:
        // its tenant gates compute and carries the pool buffers a batch
        // may take.
        Share::bytes(IDENTITY_HOST_BYTES)
    };
    share.compute_weight(cfg.device.compute_weight)
}

/// The host quota of an identity model's tenant.
const IDENTITY_HOST_BYTES: u64 = 16 << 20;

/// The smallest host quota a TorchScript model's tenant may get.
const MIN_MODEL_HOST_BYTES: u64 = 1 << 20;

/// The share of a TorchScript model version's tenant, which libtorch's
/// allocations for the model (weights, activations) are charged to: on the
/// GPU `device.fraction` of the device's memory; on the CPU
/// `device.fraction × server.host_memory` bytes (at least 1 MiB, or an
/// error naming both fields).
pub fn model_share(
    cfg: &DeploymentConfig,
    host_memory: u64,
    on_gpu: bool,
) -> Result<Share, BoxError> {
    let share = if on_gpu {
        Share::fraction(cfg.device.fraction)
    } else {
        let bytes = host_quota(cfg.device.fraction, host_memory);
        if bytes < MIN_MODEL_HOST_BYTES {
            return Err(format!(
                "deployment {}: device.fraction ({}) × server.host_memory ({host_memory} bytes) \
                 gives its model a quota of {bytes} bytes, below 1 MiB: raise one of them",
                cfg.name, cfg.device.fraction
            )
            .into());
        }
        Share::bytes(bytes)
    };
    Ok(share.compute_weight(cfg.device.compute_weight))
}

/// `fraction × host_memory`, in whole bytes.
pub fn host_quota(fraction: f64, host_memory: u64) -> u64 {
    // Exact below 2^53 bytes; rounded down.
    (fraction * host_memory as f64).floor() as u64
}

/// Admits the tenant of version `version` of `cfg`'s TorchScript model
/// (`<deployment>/<version>`, see [`model_share`]), before the model is
/// loaded into it. The version built over the model uses this tenant.
pub fn model_tenant(
    pool: &GpuPool,
    cfg: &DeploymentConfig,
    version: &str,
    host_memory: u64,
    on_gpu: bool,
) -> Result<Tenant, BoxError> {
    let label = format!("{}/{version}", cfg.name);
    let share = model_share(cfg, host_memory, on_gpu)?;
    pool.tenant(label.clone(), share).map_err(|e| {
        let quota = if on_gpu {
            format!("device.fraction {}", cfg.device.fraction)
        } else {
            format!(
                "device.fraction × server.host_memory = {} bytes",
                host_quota(cfg.device.fraction, host_memory)
            )
        };
        format!("tenant {label} ({quota}) not admitted: {e}").into()
    })
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
