//! A canary's drift check: a share of its requests mirrored to the stable
//! version, each answered pair compared.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_router::rollout::drift::{DriftConfig, DriftMonitor, Embedding, Logits};
use convoy_router::shadow::{Compare, Shadow, ShadowConfig, ShadowError, ShadowLayer};
use example_tensor::{NamedTensor, TensorData};
use futures::future::BoxFuture;
use parking_lot::RwLock;
use tower::{BoxError, Service, ServiceExt};

use crate::config::DriftPlan;
use crate::deploy::{Answer, Item, VersionService};
use crate::model::Kind;

/// The canary's mirror to the stable version, feeding the drift monitor.
pub(super) struct Mirror {
    pub(super) monitor: DriftMonitor,
    pub(super) layer: ShadowLayer<Gate, Item, RowDrift>,
    pub(super) target: Arc<RwLock<Option<VersionService>>>,
    /// Whether the canary's requests are mirrored (until the rollout ends).
    pub(super) on: Arc<AtomicBool>,
}

impl Mirror {
    pub(super) fn new(
        plan: &DriftPlan,
        kind: Kind,
        label: &str,
        stable: VersionService,
    ) -> Result<Self, BoxError> {
        let monitor = DriftMonitor::new(DriftConfig {
            min_pairs: plan.min_pairs,
            min_top1_agreement: plan.min_top1_agreement,
            min_mean_cosine: plan.min_cosine,
            max_ks: plan.max_ks,
            max_psi: plan.max_psi,
            max_scores: (plan.min_pairs as usize).max(10_000),
            ..DriftConfig::default()
        })?;
        let target = Arc::new(RwLock::new(Some(stable)));
        let layer = ShadowLayer::with_cloner(
            Gate(Arc::clone(&target)),
            ShadowConfig {
                name: format!("{label} drift"),
                fraction: plan.mirror_fraction,
                max_in_flight: plan.max_mirrored,
                timeout: Duration::from_secs(30),
            },
            Item::clone,
        )?
        .compare(RowDrift {
            monitor: monitor.clone(),
            classify: kind == Kind::Classify,
        });
        Ok(Self {
            monitor,
            layer,
            target,
            on: Arc::new(AtomicBool::new(true)),
        })
    }
}

/// The canary's backend with a drift check: mirrored while the rollout
/// runs, plain afterwards (a promoted version keeps no mirror).
pub(super) struct Switch {
    pub(super) mirrored: Shadow<VersionService, Gate, Item, RowDrift>,
    pub(super) plain: VersionService,
    pub(super) on: Arc<AtomicBool>,
    /// The path `poll_ready` made ready, taken by `call`.
    pub(super) chosen: Option<bool>,
}

impl Clone for Switch {
    /// The clone's readiness is its own.
    fn clone(&self) -> Self {
        Self {
            mirrored: self.mirrored.clone(),
            plain: self.plain.clone(),
            on: Arc::clone(&self.on),
            chosen: None,
        }
    }
}

impl Service<Item> for Switch {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Answer, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let on = *self
            .chosen
            .get_or_insert_with(|| self.on.load(Ordering::Relaxed));
        if on {
            self.mirrored.poll_ready(cx)
        } else {
            self.plain.poll_ready(cx)
        }
    }

    fn call(&mut self, item: Item) -> Self::Future {
        match self.chosen.take().expect("poll_ready must be called first") {
            true => Box::pin(self.mirrored.call(item)),
            false => self.plain.call(item),
        }
    }
}

/// The stable version while the rollout runs; afterwards mirrors fail
/// at once (off the request path) instead of keeping it alive.
#[derive(Clone)]
pub(super) struct Gate(Arc<RwLock<Option<VersionService>>>);

impl Service<Item> for Gate {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Answer, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: Item) -> Self::Future {
        let target = self.0.read().clone();
        Box::pin(async move {
            match target {
                Some(stable) => stable.oneshot(item).await,
                None => Err("the rollout is over; no mirror".into()),
            }
        })
    }
}

/// Records each row of a mirrored request: logits for classifiers,
/// the output vector (cosine) otherwise.
pub(super) struct RowDrift {
    monitor: DriftMonitor,
    classify: bool,
}

/// The first output's rows, if it is FP32.
fn rows(outputs: &[NamedTensor]) -> Option<Vec<Vec<f32>>> {
    let first = outputs.first()?;
    let TensorData::Fp32(values) = &first.tensor.data else {
        return None;
    };
    let n = first.tensor.rows().max(1);
    let width = values.len() / n;
    if width == 0 {
        return None;
    }
    Some(values.chunks(width).map(<[f32]>::to_vec).collect())
}

impl Compare<Result<Answer, BoxError>, Answer> for RowDrift {
    type Kept = Vec<Vec<f32>>;

    fn keep(&self, canary: &Result<Answer, BoxError>) -> Option<Self::Kept> {
        rows(&canary.as_ref().ok()?.outputs)
    }

    fn compare(&self, canary: Self::Kept, stable: Result<Answer, ShadowError>) {
        let Some(stable) = stable.ok().and_then(|a| rows(&a.outputs)) else {
            return;
        };
        for (b, c) in stable.iter().zip(&canary) {
            if self.classify {
                self.monitor
                    .record(&Logits(b.as_slice()), &Logits(c.as_slice()));
            } else {
                self.monitor
                    .record(&Embedding(b.as_slice()), &Embedding(c.as_slice()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use example_tensor::Tensor;

    use super::*;

    fn named(shape: Vec<usize>, data: TensorData) -> NamedTensor {
        NamedTensor::new("out", Tensor::new(shape, data).unwrap())
    }

    #[test]
    fn each_row_of_the_first_output_is_one_pair() {
        let out = named(
            vec![2, 3],
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        );
        assert_eq!(
            rows(&[out]),
            Some(vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]])
        );
        // Not FP32, or nothing: no pairs.
        assert_eq!(
            rows(&[named(vec![1, 2], TensorData::Int64(vec![1, 2]))]),
            None
        );
        assert_eq!(rows(&[]), None);
    }

    #[test]
    fn rows_feed_the_drift_monitor_per_kind() {
        let monitor = DriftMonitor::new(DriftConfig {
            min_pairs: 1,
            min_top1_agreement: Some(0.9),
            max_psi: None,
            ..DriftConfig::default()
        })
        .unwrap();
        let hook = RowDrift {
            monitor: monitor.clone(),
            classify: true,
        };
        let answer = |data: Vec<f32>| Answer {
            version: "1".into(),
            outputs: vec![named(vec![2, 2], TensorData::Fp32(data))],
        };
        // Row 1 agrees (class 0 both), row 2 does not (class 1 vs 0).
        let canary = hook.keep(&Ok(answer(vec![3.0, 1.0, 2.0, 0.0]))).unwrap();
        hook.compare(canary, Ok(answer(vec![5.0, 0.0, 0.0, 1.0])));
        let report = monitor.report();
        assert_eq!(report.pairs, 2);
        assert_eq!(report.top1_agreement, Some(0.5));
        // A failed canary request is not compared.
        assert!(hook.keep(&Err("boom".into())).is_none());
    }
}
