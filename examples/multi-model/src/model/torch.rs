//! TorchScript models through `example-models` (libtorch via tch): the
//! manifest says the kind, the tensors and the pre/post-processing.

use std::path::Path;
use std::sync::Arc;

use example_models::text::TextEncoder;
use example_models::{Contract, Device, LoadOptions, Manifest, Model, ModelKind};
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
}

impl TorchModel {
    /// Loads and warms up the package in `dir` (blocking: run it off the
    /// async threads).
    pub fn load(
        dir: &Path,
        on_gpu: bool,
        intra_op_threads: usize,
        max_batch_size: usize,
    ) -> Result<Self, BoxError> {
        let opts = LoadOptions {
            device: if on_gpu { Device::Cuda(0) } else { Device::Cpu },
            intra_op_threads,
            max_batch_size,
            half: on_gpu,
            ..LoadOptions::default()
        };
        let model = Model::load(dir, &opts)?;
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
        })
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
        let model = self.model.clone();
        async move { model.forward(batch).await.map_err(BoxError::from) }.boxed()
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
}
