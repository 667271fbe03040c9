//! The v2 REST routes on axum.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::json;

use crate::{infer, json, Error, Limits, Repository};

/// The header that carries the JSON part's length in Triton's binary
/// tensor data extension, on requests and responses.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";

struct Rest<R> {
    repo: Arc<R>,
    limits: Limits,
}

impl<R> Clone for Rest<R> {
    fn clone(&self) -> Self {
        Self {
            repo: Arc::clone(&self.repo),
            limits: self.limits,
        }
    }
}

#[derive(Deserialize)]
struct ModelPath {
    name: String,
    version: Option<String>,
}

/// All of `/v2/...` over `repo`, to merge into a user's axum app.
///
/// | route | answer |
/// |---|---|
/// | `GET /v2` | server metadata |
/// | `GET /v2/health/live`, `/v2/health/ready` | 200 `{"live": true}` / `{"ready": true}`, else 503 |
/// | `GET /v2/models/{name}[/versions/{version}]` | model metadata, 404 if unknown |
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
pub fn rest_routes<R: Repository>(repo: Arc<R>, limits: Limits) -> Router {
    Router::new()
        .route("/v2", get(server_metadata::<R>))
        .route("/v2/health/live", get(live::<R>))
        .route("/v2/health/ready", get(ready::<R>))
        .route("/v2/models/{name}", get(model_metadata::<R>))
        .route(
            "/v2/models/{name}/versions/{version}",
            get(model_metadata::<R>),
        )
        .route("/v2/models/{name}/ready", get(model_ready::<R>))
        .route(
            "/v2/models/{name}/versions/{version}/ready",
            get(model_ready::<R>),
        )
        .route("/v2/models/{name}/infer", post(model_infer::<R>))
        .route(
            "/v2/models/{name}/versions/{version}/infer",
            post(model_infer::<R>),
        )
        // The infer handler reads the body itself against `limits`, so
        // that an oversize body gets the protocol's JSON error.
        .layer(DefaultBodyLimit::disable())
        .with_state(Rest { repo, limits })
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        (self.http_status(), Json(json!({ "error": self.message() }))).into_response()
    }
}

async fn server_metadata<R: Repository>(State(s): State<Rest<R>>) -> Response {
    Json(s.repo.server_metadata()).into_response()
}

async fn live<R: Repository>(State(s): State<Rest<R>>) -> Response {
    let live = s.repo.live();
    (up(live), Json(json!({ "live": live }))).into_response()
}

async fn ready<R: Repository>(State(s): State<Rest<R>>) -> Response {
    let ready = s.repo.ready();
    (up(ready), Json(json!({ "ready": ready }))).into_response()
}

fn up(ok: bool) -> StatusCode {
    if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

async fn model_metadata<R: Repository>(
    State(s): State<Rest<R>>,
    Path(p): Path<ModelPath>,
) -> Result<Response, Error> {
    Ok(Json(s.repo.model_metadata(&p.name, p.version.as_deref())?).into_response())
}

async fn model_ready<R: Repository>(
    State(s): State<Rest<R>>,
    Path(p): Path<ModelPath>,
) -> Result<Response, Error> {
    let ready = s.repo.model_ready(&p.name, p.version.as_deref())?;
    Ok((up(ready), Json(json!({ "name": p.name, "ready": ready }))).into_response())
}

async fn model_infer<R: Repository>(
    State(s): State<Rest<R>>,
    Path(p): Path<ModelPath>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, Error> {
    let body = read_body(&headers, body, s.limits.max_body_bytes).await?;
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
    let answer = infer::run(&*s.repo, &p.name, p.version.as_deref(), request).await?;
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
