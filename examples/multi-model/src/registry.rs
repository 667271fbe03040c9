//! Deployments whose model comes from an MLflow Model Registry
//! (`source = "models:/<name>@<alias>"`, `/<stage>` or `/<version>`).
//!
//! At start the source is resolved, the version downloaded into the cache
//! and verified — `model.json` present, the TorchScript file loads, a
//! warm-up forward at the largest batch succeeds, and its kind and inputs
//! are the deployment's — before it serves. A source that moves (an alias
//! or a stage) gets an `example_registry::Watcher`: each new version it
//! announces is verified the same way and rolled out beside the serving one
//! ([`crate::rollout`]). A version that fails verification is refused and
//! logged while the old one keeps serving; a registry that goes away only
//! pauses the watching.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use convoy_gpu_pool::{GpuPool, Tenant};
use example_models::Executor;
use example_registry::{
    MlflowClient, ModelCache, ModelSource, RegistryError, RegistryEvent, Selector, Verify, Watcher,
};
use parking_lot::Mutex;
use tower::BoxError;

use crate::config::{Config, DeploymentConfig, RegistryConfig};
use crate::deploy::Deployment;
use crate::model::{Forward, TensorMeta, TorchModel};

/// How long a retired version's admitted requests may take to finish.
const DRAIN: Duration = Duration::from_secs(60);

/// A deployment's registry source.
#[derive(Debug, Clone)]
pub struct Source {
    client: MlflowClient,
    cache: ModelCache,
    name: String,
    selector: Selector,
    poll_interval: Duration,
    /// `server.host_memory`: a CPU version's tenant gets its
    /// `device.fraction`.
    host_memory: u64,
}

impl Source {
    /// The registry source of `d`, if it has one.
    pub fn of(config: &Config, d: &DeploymentConfig) -> Result<Option<Self>, BoxError> {
        let Some(ModelSource::Mlflow { name, selector }) = &d.registry else {
            return Ok(None);
        };
        let r: &RegistryConfig = config
            .server
            .registry
            .as_ref()
            .ok_or("a models:/ source needs [server.registry]")?;
        Ok(Some(Self {
            client: MlflowClient::new(&r.uri)?.with_timeout(r.timeout),
            cache: ModelCache::new(&r.cache_dir),
            name: name.clone(),
            selector: selector.clone(),
            poll_interval: r.poll_interval,
            host_memory: config.server.host_memory,
        }))
    }

    /// Resolves the source and returns its version, downloaded, verified
    /// and loaded, and the folder it was downloaded to.
    pub async fn load(
        &self,
        d: &DeploymentConfig,
        on_gpu: bool,
        executor: Option<Executor>,
        pool: &GpuPool,
    ) -> Result<(u64, Arc<dyn Forward>, PathBuf), BoxError> {
        let version = self.client.resolve(&self.name, &self.selector).await?;
        let tenants = Tenants::new(d, pool, self.host_memory, on_gpu);
        let loader = Loader::new(d, on_gpu, executor, None, tenants);
        let dir = self
            .cache
            .fetch(&self.client, &version, &*loader.verify())
            .await?;
        let model = loader.take_or_load(&dir).await?;
        Ok((version.version, model, dir))
    }

    /// Follows the source (when it moves) for `deployment`, which serves
    /// `current`: new versions are rolled out, refusals and outages logged.
    pub fn follow(
        self,
        deployment: Arc<Deployment>,
        current: u64,
        on_gpu: bool,
        executor: Option<Executor>,
    ) {
        if !matches!(self.selector, Selector::Stage(_) | Selector::Alias(_)) {
            return;
        }
        let tenants = Tenants::new(
            &deployment.config,
            deployment.pool(),
            self.host_memory,
            on_gpu,
        );
        let loader = Loader::new(
            &deployment.config,
            on_gpu,
            executor,
            Some(Arc::clone(&deployment)),
            tenants,
        );
        let watcher = Watcher::new(
            self.client,
            self.cache,
            self.name,
            self.selector,
            self.poll_interval,
            loader.verify(),
        );
        let (handle, mut events) = watcher.spawn(Some(current));
        let d = Arc::clone(&deployment);
        let task = tokio::spawn(async move {
            // Dropping the handle stops the watcher with this task.
            let _watching = handle;
            let name = d.config.name.clone();
            while let Some(event) = events.recv().await {
                match event {
                    RegistryEvent::NewVersion {
                        from,
                        version,
                        path,
                    } => {
                        let v = version.version.to_string();
                        if d.version(&v).is_some() {
                            news(&d, format!("version {v} is already serving"));
                            continue;
                        }
                        news(
                            &d,
                            format!("new version {v} (was {from:?}): verified, rolling out"),
                        );
                        let model = match loader.take_or_load(&path).await {
                            Ok(m) => m,
                            Err(e) => {
                                news(&d, format!("version {v} refused: {e}"));
                                continue;
                            }
                        };
                        match crate::rollout::roll_out(&d, &v, model, DRAIN).await {
                            Ok(end) => news(&d, format!("version {v}: rollout ended {end:?}")),
                            Err(e) => news(&d, format!("version {v}: rollout failed: {e}")),
                        }
                    }
                    RegistryEvent::Rejected { version, error } => {
                        news(
                            &d,
                            format!(
                                "version {version} refused: {error}; the serving version continues"
                            ),
                        );
                    }
                    RegistryEvent::Unavailable { error } => {
                        news(
                            &d,
                            format!("registry unavailable: {error}; serving continues"),
                        );
                    }
                    RegistryEvent::Recovered => news(&d, "registry reachable again".into()),
                    other => news(&d, format!("{other:?}")),
                }
            }
            tracing::info!(deployment = %name, "registry watcher stopped");
        });
        deployment.tasks.lock().push(task);
    }
}

fn news(d: &Deployment, message: String) {
    tracing::info!(deployment = %d.config.name, "registry: {message}");
    d.status.registry_news(message);
}

/// Loads and warms a downloaded version as its verification, and keeps
/// the loaded model for serving (so it is loaded once).
#[derive(Clone)]
struct Loader {
    on_gpu: bool,
    threads: usize,
    max_batch: usize,
    /// `batching.profile`: time each batch size while warming up.
    profile: bool,
    /// The CPU models' compute threads (see [`crate::compute`]).
    executor: Option<Executor>,
    /// The deployment whose kind and inputs a new version must match.
    deployment: Option<Arc<Deployment>>,
    verified: Arc<Mutex<Option<TorchModel>>>,
    /// Where each version's tenant comes from.
    tenants: Tenants,
}

/// Admits a downloaded version's tenant (`<deployment>/<version>`, the
/// version read from the cache folder's name) before it loads, so that its
/// weights and activations are charged to the tenant it then serves from.
#[derive(Clone)]
struct Tenants {
    config: DeploymentConfig,
    pool: GpuPool,
    host_memory: u64,
    on_gpu: bool,
}

impl Tenants {
    fn new(d: &DeploymentConfig, pool: &GpuPool, host_memory: u64, on_gpu: bool) -> Self {
        Self {
            config: d.clone(),
            pool: pool.clone(),
            host_memory,
            on_gpu,
        }
    }

    /// The tenant of the version in `dir` (cached, or being verified).
    fn of(&self, dir: &Path) -> Result<Tenant, BoxError> {
        let version = ModelCache::version_of(dir)
            .ok_or_else(|| format!("{}: not a registry version's folder", dir.display()))?;
        crate::deploy::model_tenant(
            &self.pool,
            &self.config,
            &version.to_string(),
            self.host_memory,
            self.on_gpu,
        )
    }
}

impl Loader {
    fn new(
        d: &DeploymentConfig,
        on_gpu: bool,
        executor: Option<Executor>,
        deployment: Option<Arc<Deployment>>,
        tenants: Tenants,
    ) -> Self {
        Self {
            on_gpu,
            threads: d.device.intra_op_threads,
            max_batch: d.batching.max_batch_size,
            profile: d.batching.profile,
            executor,
            deployment,
            verified: Arc::default(),
            tenants,
        }
    }

    fn load(&self, dir: &Path) -> Result<TorchModel, BoxError> {
        let tenant = self.tenants.of(dir)?;
        TorchModel::load(
            dir,
            self.on_gpu,
            self.threads,
            self.max_batch,
            self.executor.clone(),
            Some(tenant),
            self.profile,
        )
    }

    fn verify(&self) -> Arc<Verify> {
        let this = self.clone();
        Arc::new(move |dir: &Path| {
            // Loading blocks (a TorchScript file, a warm-up forward).
            let loaded = match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
                Ok(tokio::runtime::RuntimeFlavor::MultiThread) => {
                    tokio::task::block_in_place(|| this.load(dir))
                }
                _ => this.load(dir),
            }
            .map_err(|e| {
                // libtorch appends its C++ backtrace: the first line says it.
                let e = e.to_string();
                let first = e.lines().next().unwrap_or_default();
                RegistryError::verification(format!("the model does not load: {first}"))
            })?;
            if let Some(d) = &this.deployment {
                this.compatible(d, &loaded)?;
            }
            *this.verified.lock() = Some(loaded);
            Ok(())
        })
    }

    /// A new version must answer the same requests as the serving one.
    fn compatible(&self, d: &Deployment, new: &TorchModel) -> Result<(), RegistryError> {
        let Some(serving) = d.versions().first().map(|v| Arc::clone(&v.model)) else {
            return Ok(());
        };
        if new.kind() != serving.kind() {
            return Err(RegistryError::verification(format!(
                "a {:?} model cannot replace the serving {:?} model",
                new.kind(),
                serving.kind()
            )));
        }
        let (old, now): (Vec<TensorMeta>, Vec<TensorMeta>) = (serving.inputs(), new.inputs());
        if old != now {
            return Err(RegistryError::verification(format!(
                "its inputs {now:?} differ from the serving version's {old:?}"
            )));
        }
        Ok(())
    }

    /// The model verified last, or `dir` loaded now (a version found in
    /// the cache was verified by an earlier run).
    async fn take_or_load(&self, dir: &Path) -> Result<Arc<dyn Forward>, BoxError> {
        let verified = self.verified.lock().take();
        if let Some(m) = verified {
            return Ok(Arc::new(m));
        }
        let (this, dir) = (self.clone(), dir.to_owned());
        let loaded = tokio::task::spawn_blocking(move || this.load(&dir)).await??;
        Ok(Arc::new(loaded))
    }
}
