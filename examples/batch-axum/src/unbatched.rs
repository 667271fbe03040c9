//! The comparison path: the same model, one item per forward pass, behind
//! the same limits the batched path has (one model worker, a bounded queue,
//! the same queue timeout), so the demo measures batching and nothing else.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::api::ApiError;
use example_mlp::Mlp;

/// One-item-at-a-time access to the model.
#[derive(Debug, Clone)]
pub struct UnbatchedModel {
    model: Arc<Mlp>,
    /// One permit: the single model worker.
    worker: Arc<Semaphore>,
    /// `queue_capacity` permits: requests admitted (queued or running).
    admission: Arc<Semaphore>,
    queue_timeout: Option<Duration>,
    calls: Arc<AtomicU64>,
}

impl UnbatchedModel {
    /// At most `queue_capacity` requests admitted at once (more get 503), one
    /// of them running; a request that waits longer than `queue_timeout` for
    /// the worker gets 504.
    pub fn new(model: Arc<Mlp>, queue_capacity: usize, queue_timeout: Option<Duration>) -> Self {
        Self {
            model,
            worker: Arc::new(Semaphore::new(1)),
            admission: Arc::new(Semaphore::new(queue_capacity.max(1))),
            queue_timeout,
            calls: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Forward passes run so far.
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Runs one item through the model on a blocking thread.
    pub async fn infer(&self, input: Vec<f32>) -> Result<Vec<f32>, ApiError> {
        let _admitted = Arc::clone(&self.admission)
            .try_acquire_owned()
            .map_err(|_| ApiError::overloaded("the unbatched queue is full"))?;
        let acquire = Arc::clone(&self.worker).acquire_owned();
        let permit = match self.queue_timeout {
            Some(limit) => tokio::time::timeout(limit, acquire).await.map_err(|_| {
                ApiError::deadline("the request waited longer than the queue timeout")
            })?,
            None => acquire.await,
        }
        .map_err(|_| ApiError::overloaded("the model worker is closed"))?;
        let model = Arc::clone(&self.model);
        self.calls.fetch_add(1, Ordering::Relaxed);
        let out = tokio::task::spawn_blocking(move || {
            let _running = permit;
            model.infer_one(input)
        })
        .await
        .map_err(|e| ApiError::internal(format!("the model task failed: {e}")))?;
        out.map_err(ApiError::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::StatusCode;

    fn model() -> Arc<Mlp> {
        Arc::new(Mlp::seeded(&[4, 8, 2], 1).unwrap())
    }

    #[tokio::test]
    async fn answers_like_the_model() {
        let m = model();
        let svc = UnbatchedModel::new(Arc::clone(&m), 4, None);
        let x = vec![0.5, -0.25, 1.0, 0.0];
        assert_eq!(svc.infer(x.clone()).await.unwrap(), m.infer_one(x).unwrap());
        assert_eq!(svc.calls(), 1);
    }

    #[tokio::test]
    async fn full_queue_is_503() {
        let svc = UnbatchedModel::new(model(), 1, None);
        let _held = Arc::clone(&svc.admission).try_acquire_owned().unwrap();
        let err = svc.infer(vec![0.0; 4]).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(svc.calls(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn waiting_past_the_queue_timeout_is_504() {
        let svc = UnbatchedModel::new(model(), 4, Some(Duration::from_millis(100)));
        let _busy = Arc::clone(&svc.worker).try_acquire_owned().unwrap();
        let err = svc.infer(vec![0.0; 4]).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(svc.calls(), 0);
    }

    #[tokio::test]
    async fn wrong_width_is_422() {
        let svc = UnbatchedModel::new(model(), 4, None);
        let err = svc.infer(vec![0.0; 3]).await.unwrap_err();
        assert_eq!(err.status(), StatusCode::UNPROCESSABLE_ENTITY);
    }
}
