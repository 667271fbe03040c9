//! The axum app: v1 convenience routes, health, `/v1/models`, `/metrics`,
//! the OpenAPI document and `/docs`, and the middleware every response goes
//! through (`x-request-id`, a tracing span per request, HTTP metrics, the
//! body limit).

mod docs;
mod drift;
mod error;
mod limit;
mod process;
mod tasks;
mod tensors;
mod uploads;
mod v1;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::Router;
use example_kserve::ErrorBody;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio::sync::Semaphore;
use tracing::Instrument;

pub use self::docs::{openapi, DOCS_PATH, OPENAPI_PATH};
pub use self::error::ApiError;
pub use self::tasks::{
    ClassScore, ClassifyResponse, DetectResponse, Detected, EmbedResponse, MAX_TEXTS,
};
pub use self::tensors::{JsonTensor, TensorsRequest, TensorsResponse};
pub use self::v1::{DeploymentInfo, ModelsResponse, PartError, VersionInfo};

use crate::Server;

/// The request id header: taken from the request, or generated, and
/// returned on every response.
pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The header that pins a request to a version (for testers).
pub const VERSION_HEADER: &str = "x-convoy-version";

/// The header of a v1 request's own deadline, in gRPC's format (`100m` is
/// 100 ms, `2S` two seconds), as on KServe v2 REST: the request ends at the
/// earlier of it and the server's request timeout.
pub const DEADLINE_HEADER: &str = "grpc-timeout";

/// What the handlers share.
#[derive(Debug)]
pub(crate) struct AppState {
    pub(crate) server: Arc<Server>,
    /// Bounds pre- and post-processing on the blocking threads.
    pub(crate) blocking: Semaphore,
}

impl AppState {
    /// Runs `f` on tokio's blocking threads, at most `blocking_tasks` at once.
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce() -> Result<T, ApiError> + Send + 'static,
        T: Send + 'static,
    {
        let _permit = self
            .blocking
            .acquire()
            .await
            .map_err(|_| ApiError::unavailable("server is shutting down"))?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| ApiError::internal(format!("processing failed: {e}")))?
    }
}

/// The process-wide Prometheus recorder (the `metrics` facade has one
/// global recorder; every server in the process renders from it).
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let builder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Suffix("seconds".into()),
                &[
                    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                    10.0,
                ],
            )
            .and_then(|b| {
                b.set_buckets_for_metric(
                    Matcher::Suffix("batch_size".into()),
                    &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0],
                )
            })
            .expect("bucket lists are not empty");
        let recorder = builder.build_recorder();
        let handle = recorder.handle();
        // Another recorder may be installed already (a user's app embedding
        // this one): then /metrics shows only what this recorder sees.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}

/// The app for `server`.
pub(crate) fn router(server: Arc<Server>) -> Router {
    let server_body_limit = server.config.server.body_limit;
    let body_limit = usize::try_from(server_body_limit).unwrap_or(usize::MAX);
    let blocking = Semaphore::new(server.config.server.blocking_tasks);
    let v2 = example_kserve::openapi_routes(
        Arc::new(crate::v2::V2(Arc::clone(&server))),
        example_kserve::Limits::default().max_body_bytes(body_limit),
    );
    let state = Arc::new(AppState { server, blocking });
    prometheus();
    let (app, _document) = docs::documented()
        .fallback(|| async { ApiError::not_found("no such route") })
        .with_state(state)
        .merge(v2)
        .split_for_parts();
    app.merge(docs::swagger_ui())
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            limit::BodyLimit(server_body_limit),
            limit::refuse_declared_oversize,
        ))
        .layer(middleware::from_fn(request_context))
}

/// Whether the process answers.
#[utoipa::path(get, path = "/healthz", tag = docs::OPERATIONS, responses(
    (status = 200, description = "`ok`", body = String, content_type = "text/plain")))]
async fn healthz() -> &'static str {
    "ok"
}

/// Whether every deployment has a ready replica.
#[utoipa::path(get, path = "/readyz", tag = docs::OPERATIONS, responses(
    (status = 200, description = "`ready`", body = String, content_type = "text/plain"),
    (status = 503, description = "The deployments not ready yet", body = ErrorBody)))]
async fn readyz(State(state): State<Arc<AppState>>) -> Response {
    let waiting: Vec<&str> = state
        .server
        .deployments
        .iter()
        .filter(|d| !d.ready())
        .map(|d| d.config.name.as_str())
        .collect();
    if waiting.is_empty() {
        "ready".into_response()
    } else {
        ApiError::unavailable(format!("not ready: {}", waiting.join(", "))).into_response()
    }
}

/// The metrics in Prometheus' text format.
#[utoipa::path(get, path = "/metrics", tag = docs::OPERATIONS, responses(
    (status = 200, description = "Prometheus text format 0.0.4", body = String,
        content_type = "text/plain")))]
async fn metrics_text() -> Response {
    process::record();
    (
        [("content-type", "text/plain; version=0.0.4")],
        prometheus().render(),
    )
        .into_response()
}

/// Gives every request an id (its `x-request-id`, or a new one), a
/// tracing span, and HTTP metrics, and puts the id on the response.
async fn request_context(mut req: Request<Body>, next: Next) -> Response {
    let id = req
        .headers()
        .get(&REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            HeaderValue::from_str(&format!("{:016x}", rand::random::<u64>()))
                .expect("hex is a valid header value")
        });
    req.headers_mut().insert(REQUEST_ID, id.clone());
    let span = tracing::info_span!(
        "request",
        id = %String::from_utf8_lossy(id.as_bytes()),
        method = %req.method(),
        path = %req.uri().path(),
    );
    let start = tokio::time::Instant::now();
    let mut rsp = next.run(req).instrument(span.clone()).await;
    let status = rsp.status();
    span.in_scope(|| tracing::debug!(status = status.as_u16(), "answered"));
    let class = status_class(status);
    metrics::counter!("convoy_http_responses_total", "status" => class).increment(1);
    metrics::histogram!("convoy_http_request_seconds")
        .record(start.elapsed().min(Duration::from_secs(3600)).as_secs_f64());
    rsp.headers_mut().insert(REQUEST_ID, id);
    rsp
}

fn status_class(status: StatusCode) -> &'static str {
    match status.as_u16() {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
