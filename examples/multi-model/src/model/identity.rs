//! The built-in identity model: answers each item with its own inputs, of
//! any datatype and shape, so the cost of serving alone can be measured
//! (Triton users know it as the `identity` backend).

use std::time::Duration;

use example_tensor::NamedTensor;
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::BoxError;

use super::{Forward, Kind, TensorMeta};

/// Echoes its inputs, after an optional simulated forward time per batch.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    delay: Duration,
}

impl Identity {
    /// An identity model whose every batch takes `delay` (0: none).
    pub fn new(delay: Duration) -> Self {
        Self { delay }
    }
}

impl Forward for Identity {
    fn forward(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>> {
        let delay = self.delay;
        async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            Ok(batch)
        }
        .boxed()
    }

    fn kind(&self) -> Kind {
        Kind::Identity
    }

    fn device(&self) -> String {
        "cpu".into()
    }

    fn inputs(&self) -> Vec<TensorMeta> {
        vec![TensorMeta {
            name: "INPUT0".into(),
            datatype: "BYTES".into(),
            shape: vec![-1, -1],
        }]
    }

    fn outputs(&self) -> Vec<TensorMeta> {
        vec![TensorMeta {
            name: "OUTPUT0".into(),
            datatype: "BYTES".into(),
            shape: vec![-1, -1],
        }]
    }
}
