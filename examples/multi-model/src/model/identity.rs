//! The built-in identity model: answers each item with its own inputs, of
//! any datatype and shape, so the cost of serving alone can be measured
//! (Triton users know it as the `identity` backend).

use std::time::Duration;

use example_tensor::NamedTensor;
use futures::future::BoxFuture;
use futures::FutureExt;
use tower::BoxError;

use super::{Forward, Kind, TensorMeta};

/// Echoes its inputs, after an optional simulated forward time: a fixed
/// part per batch and a part per item, slept on tokio's clock (no CPU
/// used), like a device computing while the host waits.
#[derive(Debug, Clone, Default)]
pub struct Identity {
    delay: Duration,
    item_delay: Duration,
}

impl Identity {
    /// An identity model whose every batch takes `delay` (0: none).
    pub fn new(delay: Duration) -> Self {
        Self {
            delay,
            item_delay: Duration::ZERO,
        }
    }

    /// Adds `item_delay` per item: a batch of `n` takes
    /// `delay + n × item_delay`, so a deployment's capacity is known
    /// (`max_batch_size` items per such batch).
    pub fn item_delay(mut self, item_delay: Duration) -> Self {
        self.item_delay = item_delay;
        self
    }

    /// The simulated forward time of a batch of `items`.
    pub fn batch_time(&self, items: usize) -> Duration {
        let items = u32::try_from(items).unwrap_or(u32::MAX);
        self.delay
            .saturating_add(self.item_delay.saturating_mul(items))
    }
}

impl Forward for Identity {
    fn forward(
        &self,
        batch: Vec<Vec<NamedTensor>>,
    ) -> BoxFuture<'static, Result<Vec<Vec<NamedTensor>>, BoxError>> {
        let delay = self.batch_time(batch.len());
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_costs_its_fixed_part_plus_its_items() {
        let model = Identity::new(Duration::from_millis(40)).item_delay(Duration::from_millis(5));
        assert_eq!(model.batch_time(0), Duration::from_millis(40));
        assert_eq!(model.batch_time(4), Duration::from_millis(60));
        assert_eq!(Identity::default().batch_time(1000), Duration::ZERO);
        // Absurd sizes saturate instead of overflowing.
        let huge = Identity::new(Duration::MAX).item_delay(Duration::MAX);
        assert_eq!(huge.batch_time(usize::MAX), Duration::MAX);
    }

    #[test]
    fn the_item_cost_is_configured_for_identity_models_only() {
        let identity = crate::Config::parse(
            "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\nidentity_item_delay = \"5ms\"\n",
        )
        .unwrap();
        let d = identity.deployments().next().unwrap();
        assert_eq!(d.identity_item_delay, Duration::from_millis(5));
        let err = crate::Config::parse(
            "[[deployment]]\nname = \"a\"\nmodel = \"resnet\"\nidentity_item_delay = \"5ms\"\n",
        )
        .unwrap_err();
        assert!(err.to_string().contains("identity_item_delay"), "{err}");
    }
}
