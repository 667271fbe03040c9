//! The server: its deployments, the GPU pool they share, and the HTTP and
//! gRPC services over them.

use std::future::Future;
use std::sync::Arc;

use convoy_gpu_pool::{GpuPool, PoolConfig};
use example_models::Executor;
use tokio::net::TcpListener;
use tower::BoxError;

use crate::compute::Compute;
use crate::config::{self, Config};
use crate::deploy::Deployment;
use crate::model::{Forward, Identity, TorchModel};
use crate::{deploy, http, registry, v2};

/// A running set of deployments and the device pool they share.
#[derive(Debug)]
pub struct Server {
    /// The configuration it was built from.
    pub config: Config,
    /// The device pool (CUDA when present, host memory otherwise).
    pub pool: GpuPool,
    /// The deployments, in the configuration's order.
    pub deployments: Vec<Arc<Deployment>>,
}

impl Server {
    /// Loads every model version of `config` (warming each up) and builds
    /// its deployment. Needs a tokio runtime.
    pub async fn start(config: Config) -> Result<Arc<Self>, BoxError> {
        // The crates register their metric handles when their pieces are
        // built (the pool's tenants, the splits): the Prometheus recorder
        // must be installed before, or those handles go nowhere.
        crate::http::prometheus();
        let pool = GpuPool::auto(
            PoolConfig::default()
                .host_capacity(config.server.host_memory)
                .compute_slots(config.server.compute_slots),
        )?;
        tracing::info!(backend = %pool.backend_kind(), reason = ?pool.fallback_reason(), "device pool");
        // On a GPU, libtorch's CUDA memory comes from the tenants' pools:
        // set before any model allocates on the device.
        #[cfg(feature = "cuda")]
        if pool.backend_kind() == convoy_gpu_pool::BackendKind::Cuda {
            example_models::hooks::install_cuda()?;
        }
        let compute = Compute::new(&config, |d| {
            deploy::wants_gpu(d.device.kind, &pool).unwrap_or(false)
        })?;
        let mut deployments = Vec::new();
        for d in config.deployments() {
            if d.remote.is_some() {
                return Err(format!(
                    "deployment {}: [deployment.remote] is served by multi-model-front --config, not by a node",
                    d.name
                )
                .into());
            }
            let on_gpu = deploy::wants_gpu(d.device.kind, &pool)?;
            // No more replicas than the hardware runs at once.
            let clipped = compute.clip(d, on_gpu);
            let d = &clipped;
            let executor = compute.executor().cloned();
            if let Some(source) = registry::Source::of(&config, d)? {
                // The registry names the version serving first.
                let (version, model, dir) = source
                    .load(d, on_gpu, executor.clone(), &pool)
                    .await
                    .map_err(|e| format!("deployment {}: {e}", d.name))?;
                tracing::info!(deployment = %d.name, version, device = %model.device(), "model {}/{version} from the registry", d.name);
                let mut d = d.clone();
                d.versions = vec![config::VersionConfig {
                    name: version.to_string(),
                    weight: 100.0,
                }];
                // The drift reference travels with the registered version.
                crate::drift::reference_from(&mut d, &dir);
                let deployment = Deployment::new(d, vec![model], &pool)?
                    .with_request_timeout(config.server.request_timeout);
                let deployment = Arc::new(deployment);
                source.follow(Arc::clone(&deployment), version, on_gpu, executor);
                deployments.push(deployment);
                continue;
            }
            let mut models: Vec<Arc<dyn Forward>> = Vec::new();
            for v in &d.versions {
                let model = load(&config, d, &v.name, on_gpu, executor.clone(), &pool).await?;
                tracing::info!(
                    deployment = %d.name,
                    version = %v.name,
                    device = %model.device(),
                    "model {}/{} runs on {}",
                    d.name,
                    v.name,
                    model.device()
                );
                if !model.batch_profile().is_empty() {
                    let per_item: Vec<String> = model
                        .batch_profile()
                        .iter()
                        .map(|(n, took)| {
                            format!("b{n} {:.2} ms", took.as_secs_f64() * 1e3 / *n as f64)
                        })
                        .collect();
                    tracing::info!(
                        deployment = %d.name,
                        version = %v.name,
                        "model {}/{} per item: {}",
                        d.name,
                        v.name,
                        per_item.join(", ")
                    );
                }
                models.push(model);
            }
            let deployment = Deployment::new(d.clone(), models, &pool)?
                .with_request_timeout(config.server.request_timeout);
            deployments.push(Arc::new(deployment));
        }
        Ok(Arc::new(Self {
            config,
            pool,
            deployments,
        }))
    }

    /// The deployment named `name`.
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.deployments
            .iter()
            .find(|d| d.config.name == name)
            .map(|d| &**d)
    }

    /// Whether every deployment has a ready replica in every version.
    pub fn ready(&self) -> bool {
        self.deployments.iter().all(|d| d.ready())
    }

    /// The axum app with every route.
    pub fn router(self: &Arc<Self>) -> axum::Router {
        http::router(Arc::clone(self))
    }

    /// Serves HTTP on `listener` until `shutdown` completes, then stops
    /// accepting, finishes the requests already admitted, and stops the
    /// autoscalers.
    pub async fn serve(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let app = self
            .router()
            .layer(axum::middleware::from_fn(crate::remote::count_in_flight));
        let served = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await;
        for d in &self.deployments {
            d.shutdown();
        }
        served
    }

    /// Serves KServe v2 gRPC (with `grpc.health.v1` and reflection) on
    /// `listener` until `shutdown` completes, finishing admitted calls.
    pub async fn serve_grpc(
        self: &Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), BoxError> {
        let repo = Arc::new(v2::V2(Arc::clone(self)));
        let health = example_kserve::health_service(&repo, std::time::Duration::from_secs(1)).await;
        let limits = example_kserve::Limits::default()
            .max_body_bytes(usize::try_from(self.config.server.body_limit).unwrap_or(usize::MAX));
        tonic::transport::Server::builder()
            .add_service(example_kserve::grpc_service_with_limits(
                Arc::clone(&repo),
                limits,
            ))
            .add_service(health)
            .add_service(example_kserve::reflection_service()?)
            .serve_with_incoming_shutdown(
                // No Nagle delay: a lone small answer would otherwise wait
                // for the client's delayed ACK (~40 ms).
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                shutdown,
            )
            .await?;
        Ok(())
    }
}

async fn load(
    config: &Config,
    d: &config::DeploymentConfig,
    version: &str,
    on_gpu: bool,
    executor: Option<Executor>,
    pool: &GpuPool,
) -> Result<Arc<dyn Forward>, BoxError> {
    if d.is_identity() {
        return Ok(Arc::new(
            Identity::new(d.identity_delay).item_delay(d.identity_item_delay),
        ));
    }
    let dir = d.version_dir(&config.server.models_dir, version);
    let (threads, max_batch) = (d.device.intra_op_threads, d.batching.max_batch_size);
    let profile = d.batching.profile;
    // The version's tenant first: the weights are charged to it as they
    // load, and the version serves from it.
    let tenant = deploy::model_tenant(pool, d, version, config.server.host_memory, on_gpu)?;
    let loaded = tokio::task::spawn_blocking(move || {
        let quota = format!(
            "its tenant's quota (device.fraction{}) is {} bytes",
            if on_gpu {
                " of the GPU"
            } else {
                " × server.host_memory"
            },
            tenant.quota()
        );
        TorchModel::load(
            &dir,
            on_gpu,
            threads,
            max_batch,
            executor,
            Some(tenant),
            profile,
        )
        .map_err(|e| format!("{} ({quota}): {e}", dir.display()))
    })
    .await??;
    Ok(Arc::new(loaded))
}
