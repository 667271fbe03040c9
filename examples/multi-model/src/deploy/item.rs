//! What travels through a deployment: the [`Item`] of one request and
//! the [`Answer`] to it.

use std::sync::Arc;

use example_tensor::NamedTensor;
use tokio::time::Instant;

use crate::model::Kind;

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
