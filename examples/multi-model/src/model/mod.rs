//! What runs a batch: the built-in identity model here, the TorchScript
//! models of `example-models` when the server is built with them.
//!
//! A [`Forward`] is loaded once per version and shared by all of that
//! version's replicas: on the CPU one model already uses every intra-op
//! thread it is given, so replicas add queues and batchers (concurrency in
//! front of the model), never another copy of the weights.

mod identity;
mod torch;

use std::fmt;

use example_models::Contract;
use example_tensor::NamedTensor;
use futures::future::BoxFuture;
use serde::Serialize;
use tower::BoxError;

pub use self::identity::Identity;
pub use self::torch::TorchModel;

/// The kind of a model: which v1 route serves it and how its batches are
/// keyed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Echoes its inputs (any datatype).
    Identity,
    /// Image → class scores (`/classify`).
    Classify,
    /// Text → embedding (`/embed`).
    Embed,
    /// Image → boxes (`/detect`).
    Detect,
}

impl Kind {
    /// The v1 route of this kind (`classify`, `embed`, `detect`, `infer`).
    pub fn route(self) -> &'static str {
        match self {
            Kind::Identity => "infer",
            Kind::Classify => "classify",
            Kind::Embed => "embed",
            Kind::Detect => "detect",
        }
    }
}

/// A tensor as a model declares it (KServe v2 metadata).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TensorMeta {
    /// Input or output name.
    pub name: String,
    /// KServe v2 datatype name (`FP32`...).
    pub datatype: String,
    /// Dimensions, -1 where dynamic (the first one is the batch).
    pub shape: Vec<i64>,
}

/// One loaded model version: runs one batch (each item a request's input
/// tensors, joined along rows by the model) and answers per item.
pub trait Forward: Send + Sync + fmt::Debug + 'static {
    /// Runs one batch.
    fn forward(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>>;

    /// Runs one batch with `stream` (the batch's lease stream on a GPU, a
    /// `cudaStream_t` as an integer) as the framework's current stream; by
    /// default the stream is not used.
    fn forward_on(
        &self,
        batch: Vec<Vec<NamedTensor>>,
        stream: Option<u64>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>> {
        let _ = stream;
        self.forward(batch)
    }

    /// The model's kind.
    fn kind(&self) -> Kind;

    /// Where it runs, for the startup log and `/v1/models` (`cpu`, `cuda:0`).
    fn device(&self) -> String;

    /// Declared inputs.
    fn inputs(&self) -> Vec<TensorMeta>;

    /// What one request's inputs must satisfy before they join a batch
    /// (by default: at least one input, one row count of at least 1,
    /// bounded element counts).
    fn contract(&self) -> &Contract {
        static ANY: std::sync::LazyLock<Contract> = std::sync::LazyLock::new(Contract::any);
        &ANY
    }

    /// Declared outputs.
    fn outputs(&self) -> Vec<TensorMeta>;

    /// The TorchScript model behind it, for its pre- and post-processing.
    fn torch(&self) -> Option<&TorchModel> {
        None
    }

    /// The fastest forward pass at each batch size measured while loading
    /// (`batching.profile`), where the replicas' adaptive cap starts; empty
    /// when not measured.
    fn batch_profile(&self) -> &[(usize, std::time::Duration)] {
        &[]
    }
}
