//! The server: its deployments, the GPU pool they share, and the HTTP and
//! gRPC services over them.

use std::future::Future;
use std::sync::Arc;

use convoy_gpu_pool::{GpuPool, PoolConfig};
use tokio::net::TcpListener;
use tower::BoxError;

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
        let mut deployments = Vec::new();
        for d in config.deployments() {
            let on_gpu = deploy::wants_gpu(d.device.kind, &pool)?;
            if let Some(source) = registry::Source::of(&config, d)? {
                // The registry names the version serving first.
                let (version, model) = source
                    .load(d, on_gpu)
                    .await
                    .map_err(|e| format!("deployment {}: {e}", d.name))?;
                tracing::info!(deployment = %d.name, version, device = %model.device(), "model {}/{version} from the registry", d.name);
                let mut d = d.clone();
                d.versions = vec![config::VersionConfig {
                    name: version.to_string(),
                    weight: 100.0,
                }];
                let deployment = Arc::new(Deployment::new(d, vec![model], &pool)?);
                source.follow(Arc::clone(&deployment), version, on_gpu);
                deployments.push(deployment);
                continue;
            }
            let mut models: Vec<Arc<dyn Forward>> = Vec::new();
            for v in &d.versions {
                let model = load(&config, d, &v.name, on_gpu).await?;
                tracing::info!(
                    deployment = %d.name,
                    version = %v.name,
                    device = %model.device(),
                    "model {}/{} runs on {}",
                    d.name,
                    v.name,
                    model.device()
                );
                models.push(model);
            }
            deployments.push(Arc::new(Deployment::new(d.clone(), models, &pool)?));
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
        let served = axum::serve(listener, self.router())
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
) -> Result<Arc<dyn Forward>, BoxError> {
    if d.is_identity() {
        return Ok(Arc::new(
            Identity::new(d.identity_delay).item_delay(d.identity_item_delay),
        ));
    }
    let dir = d.version_dir(&config.server.models_dir, version);
    let (threads, max_batch) = (d.device.intra_op_threads, d.batching.max_batch_size);
    let loaded = tokio::task::spawn_blocking(move || {
        TorchModel::load(&dir, on_gpu, threads, max_batch)
            .map_err(|e| format!("{}: {e}", dir.display()))
    })
    .await??;
    Ok(Arc::new(loaded))
}
