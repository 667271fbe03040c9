//! The API's documentation: the OpenAPI 3.1 document at `/openapi.json`,
//! generated from the handlers' `#[utoipa::path]` attributes and types
//! (the v1 routes here, the v2 routes from the KServe layer), and Swagger UI
//! at `/docs`, its assets served from the binary.

use std::sync::{Arc, OnceLock};

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;
use utoipa_swagger_ui::{Config, SwaggerUi};

use super::{v1, AppState};

/// Where the document is served.
pub const OPENAPI_PATH: &str = "/openapi.json";

/// Where Swagger UI is served.
pub const DOCS_PATH: &str = "/docs";

pub(crate) const V1: &str = "v1";
pub(crate) const OPERATIONS: &str = "operations";

/// The document's frame; the paths come from the routes.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "convoy multi-model server",
        description = "Models served through convoy's batcher, GPU pool, autoscaler and router: \
                       v1 convenience routes (tensors, image classification, text embedding, \
                       object detection) and the KServe Open Inference Protocol v2. \
                       Errors are `{\"error\": \"...\"}` with the status that says what went wrong."
    ),
    tags(
        (name = V1, description = "Convenience routes: one per model, by its kind"),
        (name = OPERATIONS, description = "Health, readiness, metrics and this document"),
    )
)]
struct ServerDoc;

/// The server's own routes (all but `/v2`), each from its handler's
/// `#[utoipa::path]`: a route cannot be served without being documented.
pub(crate) fn documented() -> OpenApiRouter<Arc<AppState>> {
    OpenApiRouter::with_openapi(ServerDoc::openapi())
        .routes(routes!(super::healthz))
        .routes(routes!(super::readyz))
        .routes(routes!(super::metrics_text))
        .routes(routes!(openapi_json))
        .routes(routes!(v1::models))
        .routes(routes!(super::drift::drift_json))
        .routes(routes!(super::drift::drift_html))
        .routes(routes!(v1::task))
}

/// The server's OpenAPI 3.1 document: the v1 routes, health, metrics, and
/// KServe v2.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut document = documented().into_openapi();
    document.merge(example_kserve::openapi());
    document
}

/// The document as served, built once per process (it does not depend on
/// the configuration).
fn document_json() -> &'static Bytes {
    static JSON: OnceLock<Bytes> = OnceLock::new();
    JSON.get_or_init(|| {
        Bytes::from(
            openapi()
                .to_json()
                .expect("the document serializes to JSON"),
        )
    })
}

/// This document.
#[utoipa::path(get, path = "/openapi.json", tag = OPERATIONS, responses(
    (status = 200, description = "The OpenAPI 3.1 document of this server", content_type = "application/json")))]
pub(crate) async fn openapi_json() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        document_json().clone(),
    )
}

/// Swagger UI at `/docs` over `/openapi.json`, its assets compiled into the
/// binary.
pub(crate) fn swagger_ui() -> Router {
    SwaggerUi::new(DOCS_PATH)
        .config(Config::new([OPENAPI_PATH]))
        .into()
}
