//! TorchScript models through `example-models` (libtorch via tch): the
//! manifest says the kind, the tensors and the pre/post-processing.

use std::path::Path;
use std::sync::Arc;

use convoy_gpu_pool::Tenant;
use example_models::text::TextEncoder;
use example_models::{Contract, Device, Executor, LoadOptions, Manifest, Model, ModelKind};
use example_tensor::NamedTensor;
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::BoxError;

use super::{Forward, Kind, TensorMeta};

/// A loaded TorchScript model version (and its tokenizer for text).
#[derive(Debug, Clone)]
pub struct TorchModel {
    model: Model,
    encoder: Option<Arc<TextEncoder>>,
    contract: Arc<Contract>,
    /// The gpu-pool tenant libtorch's allocations for this model are
    /// charged to (its weights from loading on, each forward pass's
    /// activations): the version's tenant.
    tenant: Option<Tenant>,
}

impl TorchModel {
    /// Loads and warms up the package in `dir` (blocking: run it off the
    /// async threads). With a `tenant`, every byte libtorch allocates for
    /// the model — its weights, the warm-up's and each forward pass's
    /// activations — is charged to it (`Model::load_for_tenant`): weights
    /// past its quota fail the load, a batch past it fails with
    /// `QuotaExceeded`. The version built over the model uses that tenant.
    pub fn load(
        dir: &Path,
        on_gpu: bool,
        intra_op_threads: usize,
        max_batch_size: usize,
        executor: Option<Executor>,
        tenant: Option<Tenant>,
        profile: bool,
    ) -> Result<Self, BoxError> {
        let opts = LoadOptions {
            device: if on_gpu { Device::Cuda(0) } else { Device::Cpu },
            intra_op_threads,
            max_batch_size,
            half: on_gpu,
            executor,
            profile,
            ..LoadOptions::default()
        };
        let model = match &tenant {
            Some(t) => Model::load_for_tenant(dir, &opts, t.clone())?,
            None => Model::load(dir, &opts)?,
        };
        let encoder = match model.manifest().kind {
            ModelKind::Embed => Some(Arc::new(TextEncoder::from_manifest(dir, model.manifest())?)),
            _ => None,
        };
        let vocab = encoder.as_deref().map(TextEncoder::vocab_size);
        let contract = Arc::new(Contract::from_manifest(model.manifest(), vocab));
        Ok(Self {
            model,
            encoder,
            contract,
            tenant,
        })
    }

    /// The tenant the model's memory is charged to (see [`TorchModel::load`]).
    pub fn tenant(&self) -> Option<&Tenant> {
        self.tenant.as_ref()
    }

    /// The package's manifest.
    pub fn manifest(&self) -> &Manifest {
        self.model.manifest()
    }

    /// The tokenizer of a text model.
    pub fn encoder(&self) -> Option<&Arc<TextEncoder>> {
        self.encoder.as_ref()
    }
}

fn meta(specs: &[example_models::TensorSpec]) -> Vec<TensorMeta> {
    specs
        .iter()
        .map(|s| TensorMeta {
            name: s.name.clone(),
            datatype: s.datatype.as_str().to_string(),
            shape: s.shape.clone(),
        })
        .collect()
}

impl Forward for TorchModel {
    fn forward(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>> {
        self.forward_on(batch, None)
    }

    fn forward_on(
        &self,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>> {
        let model = self.model.clone();
        async move {
            model
                .forward_on(batch, stream)
                .await
                .map_err(BoxError::from)
        }
        .boxed()
    }

    fn kind(&self) -> Kind {
        match self.model.manifest().kind {
            ModelKind::Classify => Kind::Classify,
            ModelKind::Embed => Kind::Embed,
            ModelKind::Detect => Kind::Detect,
        }
    }

    fn device(&self) -> String {
        self.model.device().to_string()
    }

    fn inputs(&self) -> Vec<TensorMeta> {
        meta(&self.model.manifest().inputs)
    }

    fn outputs(&self) -> Vec<TensorMeta> {
        meta(&self.model.manifest().outputs)
    }

    fn contract(&self) -> &Contract {
        &self.contract
    }

    fn torch(&self) -> Option<&TorchModel> {
        Some(self)
    }

    fn batch_profile(&self) -> &[(usize, std::time::Duration)] {
        self.model.batch_profile()
    }
}
