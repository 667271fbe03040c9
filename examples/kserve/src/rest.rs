//! The v2 REST routes on axum.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::json::{InferenceRequest, InferenceResponse};
use crate::openapi::{
    BinaryTensors, ErrorBody, InferErrors, InferHeaders, INFER_ANSWER, INFER_BODY, V2,
};
use crate::{infer, json, Error, Limits, ModelMetadata, Parameters, Repository, ServerMetadata};

/// The header that carries the JSON part's length in Triton's binary
/// tensor data extension, on requests and responses.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

#[derive(Clone)]
pub(crate) struct Rest {
    repo: Arc<dyn Repository>,
    limits: Limits,
}

/// The `{name}` of a model route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ModelName {
    /// The model.
    name: String,
}

/// The `{name}` and `{version}` of a versioned model route.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Path)]
struct ModelVersion {
    /// The model.
    name: String,
    /// One of its versions.
    version: String,
}

/// `GET /v2/health/live`.
#[derive(Serialize, ToSchema)]
struct ServerLive {
    live: bool,
}

/// `GET /v2/health/ready`.
#[derive(Serialize, ToSchema)]
struct ServerReady {
    ready: bool,
}

/// `GET /v2/models/{name}[/versions/{version}]`: the model's metadata and
/// the repository's parameters for it.
#[derive(Serialize, ToSchema)]
#[schema(as = ModelMetadataResponse)]
struct MetadataResponse {
    #[serde(flatten)]
    metadata: ModelMetadata,
    /// Facts about the model beyond the protocol's fields, e.g. the state
    /// of a rollout between its versions (`rollout`); absent when there
    /// are none. REST only: gRPC's answer has no such field.
    #[serde(skip_serializing_if = "Parameters::is_empty")]
    #[schema(value_type = Object)]
    parameters: Parameters,
}

/// `GET /v2/models/{name}/ready`.
#[derive(Serialize, ToSchema)]
struct ModelReady {
    name: String,
    ready: bool,
}

/// All of `/v2/...` over `repo`, to merge into a user's axum app.
///
/// | route | answer |
/// |---|---|
/// | `GET /v2` | server metadata |
/// | `GET /v2/health/live`, `/v2/health/ready` | 200 `{"live": true}` / `{"ready": true}`, else 503 |
/// | `GET /v2/models/{name}[/versions/{version}]` | model metadata (with [`Repository::model_parameters`] as `parameters`), 404 if unknown |
/// | `GET /v2/models/{name}[/versions/{version}]/ready` | 200 `{"name", "ready": true}`, 503 not ready, 404 unknown |
/// | `POST /v2/models/{name}[/versions/{version}]/infer` | v2 JSON or Triton's binary tensor data extension |
///
/// Errors are `{"error": "..."}` with 400 (malformed or mismatched input),
/// 404 (unknown model or version), 413 (body over
/// [`Limits::max_body_bytes`] or a shape over [`Limits::max_elements`]),
/// 503 (overloaded, not ready) or 504 (deadline passed).
///
/// A request's deadline comes from a `grpc-timeout` header (gRPC's format:
/// `100m` is 100 ms, `2S` two seconds; units `H M S m u n`) or Triton's
/// `timeout` request parameter in microseconds, whichever is earlier.
///
/// [`openapi_routes`] is the same routes with their OpenAPI document.
pub fn rest_routes<R: Repository>(repo: Arc<R>, limits: Limits) -> Router {
    openapi_routes(repo, limits).split_for_parts().0
}

/// [`rest_routes`] as a [`utoipa_axum`] router: the routes and their
/// OpenAPI 3.1 document together, to merge into a user's
/// [`OpenApiRouter`] so the app's document covers `/v2` too.
///
/// ```
/// # use std::sync::Arc;
/// use utoipa_axum::router::OpenApiRouter;
///
/// # fn app<R: example_kserve::Repository>(repo: Arc<R>) {
/// let (app, document) = OpenApiRouter::new()
///     // ...the app's own documented routes...
///     .merge(example_kserve::openapi_routes(repo, example_kserve::Limits::default()))
///     .split_for_parts();
/// assert!(document.paths.paths.contains_key("/v2/models/{name}/infer"));
/// let app: axum::Router = app;
/// # let _ = app;
/// # }
/// ```
pub fn openapi_routes<R, S>(repo: Arc<R>, limits: Limits) -> OpenApiRouter<S>
where
    R: Repository,
    S: Clone + Send + Sync + 'static,
{
    documented()
        // The infer handlers read the body themselves against `limits`, so
        // that an oversize body gets the protocol's JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(Rest { repo, limits })
}

/// The v2 routes, each from its handler's `#[utoipa::path]`: a route
/// cannot be served without being in the document.
pub(crate) fn documented() -> OpenApiRouter<Rest> {
    OpenApiRouter::with_openapi(crate::openapi::ApiDoc::openapi())
        .routes(routes!(server_metadata))
        .routes(routes!(live))
        .routes(routes!(ready))
        .routes(routes!(model_metadata))
        .routes(routes!(version_metadata))
        .routes(routes!(model_ready))
        .routes(routes!(version_ready))
        .routes(routes!(model_infer))
        .routes(routes!(version_infer))
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: self.message().to_owned(),
        };
        let status = self.http_status();
        let mut response = (status, Json(body)).into_response();
        // Overloaded or not ready: when to try again, in seconds.
        if status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// Server name, version and protocol extensions.
#[utoipa::path(get, path = "/v2", tag = V2,
    responses((status = 200, description = "Server metadata", body = ServerMetadata)))]
async fn server_metadata(State(s): State<Rest>) -> Json<ServerMetadata> {
    Json(s.repo.server_metadata())
}

/// Whether the server answers at all.
#[utoipa::path(get, path = "/v2/health/live", tag = V2, responses(
    (status = 200, description = "Live", body = ServerLive),
    (status = 503, description = "Not live", body = ServerLive)))]
async fn live(State(s): State<Rest>) -> (StatusCode, Json<ServerLive>) {
    let live = s.repo.live();
    (up(live), Json(ServerLive { live }))
}

/// Whether the server can serve inference.
#[utoipa::path(get, path = "/v2/health/ready", tag = V2, responses(
    (status = 200, description = "Ready", body = ServerReady),
    (status = 503, description = "Not ready", body = ServerReady)))]
async fn ready(State(s): State<Rest>) -> (StatusCode, Json<ServerReady>) {
    let ready = s.repo.ready();
    (up(ready), Json(ServerReady { ready }))
}

fn up(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

/// What a model takes and returns (the server picks the version).
#[utoipa::path(get, path = "/v2/models/{name}", tag = V2, params(ModelName), responses(
    (status = 200, description = "Model metadata", body = MetadataResponse),
    (status = 404, description = "No such model", body = ErrorBody)))]
async fn model_metadata(
    State(s): State<Rest>,
    Path(p): Path<ModelName>,
) -> Result<Json<MetadataResponse>, Error> {
    metadata(&s, &p.name, None)
}

/// What one version of a model takes and returns.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}", tag = V2,
    params(ModelVersion), responses(
    (status = 200, description = "Model metadata", body = MetadataResponse),
    (status = 404, description = "No such model or version", body = ErrorBody)))]
async fn version_metadata(
    State(s): State<Rest>,
    Path(p): Path<ModelVersion>,
) -> Result<Json<MetadataResponse>, Error> {
    metadata(&s, &p.name, Some(&p.version))
}

fn metadata(s: &Rest, name: &str, version: Option<&str>) -> Result<Json<MetadataResponse>, Error> {
    let metadata = s.repo.model_metadata(name, version)?;
    let parameters = s.repo.model_parameters(name, version)?;
    Ok(Json(MetadataResponse {
        metadata,
        parameters,
    }))
}

/// Whether a model can serve inference.
#[utoipa::path(get, path = "/v2/models/{name}/ready", tag = V2, params(ModelName), responses(
    (status = 200, description = "Ready", body = ModelReady),
    (status = 503, description = "Not ready", body = ModelReady),
    (status = 404, description = "No such model", body = ErrorBody)))]
async fn model_ready(
    State(s): State<Rest>,
    Path(p): Path<ModelName>,
) -> Result<(StatusCode, Json<ModelReady>), Error> {
    readiness(&s, p.name, None)
}

/// Whether one version of a model can serve inference.
#[utoipa::path(get, path = "/v2/models/{name}/versions/{version}/ready", tag = V2,
    params(ModelVersion), responses(
    (status = 200, description = "Ready", body = ModelReady),
    (status = 503, description = "Not ready", body = ModelReady),
    (status = 404, description = "No such model or version", body = ErrorBody)))]
async fn version_ready(
    State(s): State<Rest>,
    Path(p): Path<ModelVersion>,
) -> Result<(StatusCode, Json<ModelReady>), Error> {
    readiness(&s, p.name, Some(&p.version))
}

fn readiness(
    s: &Rest,
    name: String,
    version: Option<&str>,
) -> Result<(StatusCode, Json<ModelReady>), Error> {
    let ready = s.repo.model_ready(&name, version)?;
    Ok((up(ready), Json(ModelReady { name, ready })))
}

/// Runs inference on a model (the server picks the version).
#[utoipa::path(post, path = "/v2/models/{name}/infer", tag = V2,
    params(ModelName, InferHeaders),
    request_body(description = INFER_BODY, content(
        (InferenceRequest = "application/json"), (BinaryTensors = "application/octet-stream"))),
    responses((status = 200, description = INFER_ANSWER, content(
        (InferenceResponse = "application/json"), (BinaryTensors = "application/octet-stream"))),
        InferErrors))]
async fn model_infer(
    State(s): State<Rest>,
    Path(p): Path<ModelName>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    infer(&s, &p.name, None, &headers, body).await
}

/// Runs inference on one version of a model.
#[utoipa::path(post, path = "/v2/models/{name}/versions/{version}/infer", tag = V2,
    params(ModelVersion, InferHeaders),
    request_body(description = INFER_BODY, content(
        (InferenceRequest = "application/json"), (BinaryTensors = "application/octet-stream"))),
    responses((status = 200, description = INFER_ANSWER, content(
        (InferenceResponse = "application/json"), (BinaryTensors = "application/octet-stream"))),
        InferErrors))]
async fn version_infer(
    State(s): State<Rest>,
    Path(p): Path<ModelVersion>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    infer(&s, &p.name, Some(&p.version), &headers, body).await
}

async fn infer(
    s: &Rest,
    name: &str,
    version: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body = read_body(headers, body, s.limits.max_body_bytes).await?;
    let (json_part, binary) = match headers.get(HEADER_CONTENT_LENGTH) {
        None => (body, Bytes::new()),
        Some(v) => {
            let n = v
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    Error::bad_request(format!("{HEADER_CONTENT_LENGTH} must be a byte count"))
                })?;
            if n > body.len() {
                return Err(Error::bad_request(format!(
                    "{HEADER_CONTENT_LENGTH} is {n} but the body has only {} bytes",
                    body.len()
                )));
            }
            let mut json_part = body;
            let binary = json_part.split_off(n);
            (json_part, binary)
        }
    };
    let mut request = json::decode_request(&json_part, binary, &s.limits)?;
    request.deadline = infer::deadline(
        headers.get("grpc-timeout").map(HeaderValue::as_bytes),
        &request.parameters,
    )?;
    let answer = infer::run(&*s.repo, name, version, request).await?;
    let encoded = json::encode_response(&answer)?;
    let mut response = Response::new(Body::from(encoded.body));
    let headers = response.headers_mut();
    match encoded.header_len {
        None => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Some(n) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(HEADER_CONTENT_LENGTH, HeaderValue::from(n));
        }
    }
    Ok(response)
}

async fn read_body(headers: &HeaderMap, body: Body, limit: usize) -> Result<Bytes, Error> {
    let too_large = || Error::payload_too_large(format!("the body is over {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(s) = source {
            if s.is::<http_body_util::LengthLimitError>() {
                return too_large();
            }
            source = s.source();
        }
        Error::bad_request(format!("cannot read the body: {e}"))
    })
}
