//! An axum app serving a small MLP through `convoy-batcher`, with the same
//! model unbatched beside it for comparison.
//!
//! - `POST /v1/models/mlp/infer` with `{"inputs":[f32; 1024]}` answers
//!   `{"outputs":[f32; 16]}`; requests are grouped into batches of up to
//!   `max_batch_size` and each batch is one forward pass (one sgemm per layer).
//! - `POST /v1/models/mlp-unbatched/infer`: same model, one item per forward
//!   pass, same single model worker, same queue bound and timeout.
//! - `GET /stats`: the batcher's statistics; `GET /v1/models/mlp`: the model.
//!
//! Bad JSON is a 4xx with `{"error": ...}`; a wrong input width is 422; a
//! full queue is 503 (with `Retry-After`); a request that waited past the
//! queue timeout is 504.
//!
//! ```
//! use std::sync::Arc;
//! use example_batch_axum::{app, AppState, Mlp, ServerConfig};
//!
//! # #[tokio::main] async fn main() -> Result<(), tower::BoxError> {
//! let model = Arc::new(Mlp::seeded(&[8, 16, 4], 42)?);
//! let router = app(AppState::new(model, &ServerConfig::default())?);
//! # let _ = router; Ok(()) }
//! ```

mod api;
mod unbatched;

pub use api::{
    app, ApiError, AppState, BatchedModel, InferRequest, InferResponse, ServerConfig,
    BATCHED_ROUTE, MODEL_ROUTE, STATS_ROUTE, UNBATCHED_ROUTE,
};
pub use example_mlp::{InputWidth, InvalidDims, Mlp, HIDDEN_DIM, INPUT_DIM, OUTPUT_DIM};
pub use unbatched::UnbatchedModel;
