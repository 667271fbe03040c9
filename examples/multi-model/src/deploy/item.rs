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
    /// Tokens per row for text models (0 for the others): requests share
    /// a batch by its bucket ([`length_key`]).
    pub seq_len: u64,
    /// Its cost in the batch: rows.
    pub cost: u64,
    /// Answered 504 unserved if still queued then.
    pub deadline: Option<Instant>,
}

impl Item {
    /// An item for `inputs` with its cost (rows of the first input) and,
    /// for text models, its sequence length.
    pub fn new(inputs: Vec<NamedTensor>, kind: Kind) -> Self {
        let rows = inputs.first().map_or(1, |t| t.tensor.rows()).max(1);
        let seq_len = match kind {
            Kind::Embed => inputs
                .first()
                .and_then(|t| t.tensor.shape.get(1).copied())
                .map_or(0, |len| len.max(1) as u64),
            _ => 0,
        };
        Self {
            inputs: Arc::new(inputs),
            seq_len,
            cost: rows as u64,
            deadline: None,
        }
    }
}

/// The batch key of an item of `seq_len` tokens: the power of two at or
/// above it, every length up to `shortest` in the smallest bucket; 0 (one
/// key for all) for models without a sequence length. A batch is padded to
/// its longest item, so a text never pays for more than twice its length,
/// or `shortest`.
pub fn length_key(seq_len: u64, shortest: usize) -> u64 {
    if seq_len == 0 {
        0
    } else {
        seq_len.max(shortest as u64).next_power_of_two()
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

#[cfg(test)]
mod tests {
    use super::length_key;

    #[test]
    fn texts_up_to_the_shortest_bucket_share_it_and_longer_ones_go_by_power_of_two() {
        assert_eq!(length_key(0, 32), 0, "no sequence length: one key");
        for len in [1, 13, 18, 32] {
            assert_eq!(length_key(len, 32), 32, "{len} tokens");
        }
        assert_eq!(length_key(33, 32), 64);
        assert_eq!(length_key(100, 32), 128);
        // `shortest_bucket = 1`: every power of two its own bucket.
        assert_eq!(length_key(13, 1), 16);
        assert_eq!(length_key(18, 1), 32);
        // A shortest bucket between powers of two rounds up.
        assert_eq!(length_key(20, 24), 32);
    }
}
