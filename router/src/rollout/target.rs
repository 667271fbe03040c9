use tower::BoxError;

use crate::split::SplitHandle;
use crate::stats::BackendSnapshot;

/// What a [`Rollout`](super::Rollout) drives: a split's weights and its
/// per-backend statistics. Implemented for [`SplitHandle`]; implement it to
/// drive something else (another router, a mesh API).
pub trait RolloutTarget: Send + Sync + 'static {
    /// Gives `canary` `percent` and `stable` `100 - percent`.
    fn set_canary_percent(&self, stable: &str, canary: &str, percent: f64) -> Result<(), BoxError>;

    /// Cumulative statistics of `backend`.
    fn snapshot(&self, backend: &str) -> Option<BackendSnapshot>;
}

impl<S: Clone + Send + 'static> RolloutTarget for SplitHandle<S> {
    fn set_canary_percent(&self, stable: &str, canary: &str, percent: f64) -> Result<(), BoxError> {
        let p = percent.clamp(0.0, 100.0);
        self.set_weights([(stable, 100.0 - p), (canary, p)])?;
        Ok(())
    }

    fn snapshot(&self, backend: &str) -> Option<BackendSnapshot> {
        self.backend(backend)
    }
}
