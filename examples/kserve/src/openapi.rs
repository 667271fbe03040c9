//! The v2 routes' OpenAPI 3.1 document, generated from the handlers'
//! `#[utoipa::path]` attributes and the types they take and return.

use std::collections::BTreeMap;

use example_tensor::DataType;
use serde::Serialize;
use utoipa::openapi::content::ContentBuilder;
use utoipa::openapi::response::ResponseBuilder;
use utoipa::openapi::schema::{ArrayBuilder, ObjectBuilder, Schema, SchemaType, Type};
use utoipa::openapi::{KnownFormat, Ref, RefOr, Response, SchemaFormat};
use utoipa::{IntoParams, IntoResponses, OpenApi, PartialSchema, ToSchema};

use crate::ErrorKind;

/// The tag of the v2 operations.
pub(crate) const V2: &str = "KServe v2";

/// The document's frame: title, description and the v2 tag; the paths come
/// from the routes (see [`crate::rest`]).
#[derive(OpenApi)]
#[openapi(
    info(
        title = "KServe Open Inference Protocol v2",
        description = "Server and model health, model metadata and inference over REST, \
                       with Triton's binary tensor data extension."
    ),
    tags((name = V2, description = "The Open Inference Protocol v2 (KServe, Triton)"))
)]
pub(crate) struct ApiDoc;

/// The OpenAPI 3.1 document of [`rest_routes`](crate::rest_routes): every
/// `/v2` route with its parameters, bodies and error answers.
///
/// ```
/// let document = example_kserve::openapi();
/// let json = document.to_json().unwrap();
/// assert!(json.contains("/v2/models/{name}/versions/{version}/infer"));
/// ```
pub fn openapi() -> utoipa::openapi::OpenApi {
    crate::rest::documented().into_openapi()
}

/// The body of every error answer: `{"error": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
pub struct ErrorBody {
    /// What went wrong, for the caller.
    pub error: String,
}

/// The headers the infer routes read.
#[derive(IntoParams)]
#[into_params(parameter_in = Header)]
#[allow(dead_code)] // only documents the headers: the handler reads them itself
pub(crate) struct InferHeaders {
    /// Triton's binary tensor data extension: the length of the JSON part
    /// at the start of the body; the binary tensors follow it.
    #[param(rename = "Inference-Header-Content-Length")]
    inference_header_content_length: Option<usize>,
    /// The request's deadline in gRPC's format: `100m` is 100 ms, `2S`
    /// two seconds (units `H M S m u n`).
    #[param(rename = "grpc-timeout")]
    grpc_timeout: Option<String>,
}

/// The body of an infer request.
pub(crate) const INFER_BODY: &str = "The inputs: v2 JSON, or with Triton's binary tensor data \
     extension a JSON part followed by raw tensors";

/// A body with Triton's binary tensor data extension: a v2 JSON part,
/// then raw tensors.
pub(crate) struct BinaryTensors;

impl PartialSchema for BinaryTensors {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(SchemaType::Type(Type::String))
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::Binary)))
            .description(Some(
                "A v2 JSON part (its length in `Inference-Header-Content-Length`), then the \
                 tensors that have a `binary_data_size` parameter, as raw little-endian bytes \
                 in order (BYTES elements with a 4-byte length each)",
            ))
            .into()
    }
}

impl ToSchema for BinaryTensors {}

/// The answer of an infer request.
pub(crate) const INFER_ANSWER: &str = "The outputs: v2 JSON, or with Triton's binary tensor \
     data extension the JSON part (its length in `Inference-Header-Content-Length`) followed by \
     the outputs asked for with `binary_data`";

/// The error answers of the infer routes: one per [`ErrorKind`], with its
/// status.
pub(crate) struct InferErrors;

impl IntoResponses for InferErrors {
    fn responses() -> BTreeMap<String, RefOr<Response>> {
        let mut responses = BTreeMap::new();
        for kind in ERROR_KINDS {
            let status = kind.http_status().as_u16().to_string();
            let description = match responses.remove(&status) {
                Some(RefOr::T(Response { description, .. })) => {
                    format!("{description}, or {}", when(kind).to_lowercase())
                }
                _ => when(kind).to_owned(),
            };
            let error = ResponseBuilder::new()
                .description(description)
                .content(
                    "application/json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name(ErrorBody::name())))
                        .build(),
                )
                .build();
            responses.insert(status, RefOr::T(error));
        }
        responses
    }
}

/// Every kind of error an infer request can meet.
const ERROR_KINDS: [ErrorKind; 8] = ErrorKind::ALL;

/// When the protocol answers with `kind`.
fn when(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::BadRequest => {
            "Malformed request: bad JSON, unknown datatype, shape and data disagree, \
             an input the model does not take or that breaks its input contract"
        }
        ErrorKind::NotFound => "No such model or version",
        ErrorKind::PayloadTooLarge => "The body or a tensor's shape is over the server's limits",
        ErrorKind::Overloaded => "The model's queue is full",
        ErrorKind::Unavailable => "The model or server is not ready",
        ErrorKind::DeadlineExceeded => "The request's deadline passed before an answer",
        ErrorKind::Quota => "A resource quota of the server (a version's device memory) is used up",
        ErrorKind::Internal => "The server failed",
    }
}

/// A v2 datatype name: `BOOL`, `UINT8`...`UINT64`, `INT8`...`INT64`,
/// `FP16`, `FP32`, `FP64`, `BYTES`.
pub(crate) fn datatype_schema() -> Schema {
    ObjectBuilder::new()
        .schema_type(SchemaType::Type(Type::String))
        .enum_values(Some(DataType::ALL.map(DataType::as_str)))
        .description(Some("The element type"))
        .into()
}

/// Tensor elements, row-major: a flat or nested array of numbers,
/// booleans or strings (`BYTES`).
pub(crate) fn tensor_data_schema() -> Schema {
    let element = ObjectBuilder::new()
        .schema_type(SchemaType::from_iter([
            Type::Number,
            Type::Boolean,
            Type::String,
            Type::Array,
        ]))
        .build();
    ArrayBuilder::new()
        .items(element)
        .description(Some(
            "The elements, row-major, flat or nested; numbers, booleans, or strings for BYTES",
        ))
        .into()
}
