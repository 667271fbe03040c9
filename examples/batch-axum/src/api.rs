//! The HTTP surface: routes, request validation, and how batcher errors
//! become status codes.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use convoy_batcher::{
    batch_fn, Batch, BatchConfig, Closed, DeadlineExceeded, OverflowPolicy, QueueFull,
};
use serde::{Deserialize, Serialize};
use tower::{BoxError, ServiceExt};

use crate::unbatched::UnbatchedModel;
use example_mlp::{InputWidth, Mlp};

/// Route of the batched model.
pub const BATCHED_ROUTE: &str = "/v1/models/mlp/infer";
/// Route of the same model without batching.
pub const UNBATCHED_ROUTE: &str = "/v1/models/mlp-unbatched/infer";
/// Route of the batcher's statistics.
pub const STATS_ROUTE: &str = "/stats";
/// Route describing the model.
pub const MODEL_ROUTE: &str = "/v1/models/mlp";

/// How the server batches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Most items in one forward pass.
    pub max_batch_size: usize,
    /// Most requests waiting (per route); more get 503.
    pub queue_capacity: usize,
    /// How long the oldest queued request may wait for a fuller batch.
    pub max_wait: Duration,
    /// A request still queued after this long gets 504.
    pub queue_timeout: Duration,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            max_batch_size: 32,
            queue_capacity: 1024,
            max_wait: Duration::ZERO,
            queue_timeout: Duration::from_secs(5),
        }
    }
}

/// `POST` body of the infer routes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InferRequest {
    /// One input vector, `input_dim` numbers.
    pub inputs: Vec<f32>,
}

/// Answer of the infer routes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct InferResponse {
    /// One output vector, `output_dim` numbers.
    pub outputs: Vec<f32>,
}

/// The request-level batched model service.
pub type BatchedModel = Batch<Vec<f32>, Vec<f32>>;

/// Everything the handlers share.
#[derive(Debug, Clone)]
pub struct AppState {
    model: Arc<Mlp>,
    batched: BatchedModel,
    unbatched: UnbatchedModel,
}

impl AppState {
    /// Puts `model` behind a batcher configured by `config`, and beside it
    /// the unbatched path with the same limits. Must run inside a tokio
    /// runtime (the batcher spawns its worker).
    pub fn new(model: Arc<Mlp>, config: &ServerConfig) -> Result<Self, BoxError> {
        let batch_config = BatchConfig::builder()
            .name("mlp")
            .max_batch_size(config.max_batch_size)
            .queue_capacity(config.queue_capacity)
            .max_wait(config.max_wait)
            .queue_timeout(config.queue_timeout)
            .overflow(OverflowPolicy::Reject)
            .max_concurrent_batches(1)
            .build()?;
        let worker_model = Arc::clone(&model);
        let batched = batch_fn(batch_config, move |items: Vec<Vec<f32>>| {
            let model = Arc::clone(&worker_model);
            // The forward pass is CPU-bound: keep it off the async workers.
            async move { tokio::task::spawn_blocking(move || model.infer_batch(items)).await }
        });
        let unbatched = UnbatchedModel::new(
            Arc::clone(&model),
            config.queue_capacity,
            Some(config.queue_timeout),
        );
        Ok(Self {
            model,
            batched,
            unbatched,
        })
    }

    /// The batched service (for its handle and statistics).
    pub fn batched(&self) -> &BatchedModel {
        &self.batched
    }

    /// The unbatched path.
    pub fn unbatched(&self) -> &UnbatchedModel {
        &self.unbatched
    }
}

/// The application: infer routes (batched and not), model info, stats.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(BATCHED_ROUTE, post(infer_batched))
        .route(UNBATCHED_ROUTE, post(infer_unbatched))
        .route(MODEL_ROUTE, get(model_info))
        .route(STATS_ROUTE, get(stats))
        .with_state(state)
}

/// An error answer: a status and `{"error": "..."}`.
#[derive(Debug, Clone)]
pub struct ApiError {
    status: StatusCode,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 503: the queue is full or the worker is gone; retry later.
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 504: the request waited too long in the queue.
    pub fn deadline(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, message)
    }

    /// 500: something failed inside the server.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// The status code.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Maps an error from the batched service to an answer.
    pub fn from_batch(err: BoxError) -> Self {
        if err.is::<QueueFull>() {
            Self::overloaded(format!("{err}; retry later"))
        } else if err.is::<DeadlineExceeded>() {
            Self::deadline(err.to_string())
        } else if err.is::<Closed>() {
            Self::overloaded(format!("{err}; the server is shutting down"))
        } else if let Some(width) = err.downcast_ref::<InputWidth>() {
            width.clone().into()
        } else {
            Self::internal(err.to_string())
        }
    }
}

impl From<InputWidth> for ApiError {
    fn from(e: InputWidth) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        Self::new(rejection.status(), rejection.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(serde_json::json!({ "error": self.message })),
        )
            .into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

fn validate(
    body: Result<Json<InferRequest>, JsonRejection>,
    width: usize,
) -> Result<Vec<f32>, ApiError> {
    let Json(req) = body?;
    if req.inputs.len() != width {
        return Err(InputWidth {
            expected: width,
            got: req.inputs.len(),
        }
        .into());
    }
    Ok(req.inputs)
}

async fn infer_batched(
    State(state): State<AppState>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Result<Json<InferResponse>, ApiError> {
    let inputs = validate(body, state.model.input_dim())?;
    let outputs = state
        .batched
        .clone()
        .oneshot(inputs)
        .await
        .map_err(ApiError::from_batch)?;
    Ok(Json(InferResponse { outputs }))
}

async fn infer_unbatched(
    State(state): State<AppState>,
    body: Result<Json<InferRequest>, JsonRejection>,
) -> Result<Json<InferResponse>, ApiError> {
    let inputs = validate(body, state.model.input_dim())?;
    let outputs = state.unbatched.infer(inputs).await?;
    Ok(Json(InferResponse { outputs }))
}

async fn model_info(State(state): State<AppState>) -> Json<serde_json::Value> {
    Json(serde_json::json!({
        "name": "mlp",
        "dims": state.model.dims(),
        "parameters": state.model.parameter_count(),
        "inputs": state.model.input_dim(),
        "outputs": state.model.output_dim(),
    }))
}

async fn stats(State(state): State<AppState>) -> Json<serde_json::Value> {
    let stats = state.batched.handle().stats();
    Json(serde_json::json!({
        "totals": {
            "batches": stats.batches_total,
            "items": stats.completed_total,
        },
        "batcher": stats,
        "unbatched": { "calls": state.unbatched.calls() },
    }))
}
