//! The KServe Open Inference Protocol v2 over REST (axum) and gRPC (tonic),
//! on any [`Repository`] of models.
//!
//! The protocol layer decodes requests into [`example_tensor::NamedTensor`]s
//! (v2 JSON, Triton's binary tensor data extension, gRPC typed or raw
//! contents), checks shapes against data and [`Limits`] before allocating,
//! echoes request ids, keeps the requested outputs and encodes them. A
//! repository only computes tensors, so it can sit on any convoy-batched
//! service; [`Error::from_service`] maps a service's errors to statuses with
//! the classification the server gives it.
//! [`openapi_routes`] is the REST routes with their OpenAPI 3.1 document
//! (also alone: [`openapi`]), to merge into an app's own document.
//!
//! A model's metadata lists every version served. A repository can say
//! more about a model through [`Repository::model_parameters`] (none by
//! default): the REST metadata answer carries it as its `parameters`
//! object, the protocol's one place for extra members, e.g. the state of
//! a rollout between two versions (`{"parameters": {"rollout": {...}}}`).
//! gRPC's `ModelMetadataResponse` has no such field: there a rollout shows
//! only as the versions it serves.
//!
//! ```
//! use std::sync::Arc;
//! use example_kserve::{
//!     rest_routes, BoxFuture, Error, InferRequest, InferResponse, Limits, ModelMetadata,
//!     Repository, ServerMetadata,
//! };
//!
//! /// Answers every request with its inputs.
//! struct Echo;
//!
//! impl Repository for Echo {
//!     fn server_metadata(&self) -> ServerMetadata {
//!         ServerMetadata { name: "echo".into(), version: "1".into(), extensions: vec![] }
//!     }
//!     fn live(&self) -> bool { true }
//!     fn ready(&self) -> bool { true }
//!     fn model_metadata(&self, name: &str, _: Option<&str>) -> Result<ModelMetadata, Error> {
//!         Err(Error::not_found(format!("no model {name}")))
//!     }
//!     fn model_ready(&self, name: &str, _: Option<&str>) -> Result<bool, Error> {
//!         Ok(name == "echo")
//!     }
//!     fn infer(&self, name: &str, _: Option<&str>, request: InferRequest)
//!         -> BoxFuture<'static, Result<InferResponse, Error>>
//!     {
//!         let model_name = name.to_owned();
//!         Box::pin(async move {
//!             Ok(InferResponse { model_name, outputs: request.inputs, ..Default::default() })
//!         })
//!     }
//! }
//!
//! let app: axum::Router = rest_routes(Arc::new(Echo), Limits::default());
//! // axum::serve(listener, app).await?;
//! # let _ = app;
//! ```

mod error;
mod grpc;
mod infer;
mod json;
mod limits;
mod openapi;
mod raw;
mod repository;
mod rest;

pub use error::{Error, ErrorKind};
pub use grpc::{
    grpc_service, grpc_service_with_limits, health_service, proto, reflection_service,
    InferenceService, FILE_DESCRIPTOR_SET,
};
pub use infer::parse_grpc_timeout;
pub use limits::Limits;
pub use openapi::{openapi, ErrorBody};
pub use repository::{
    BoxFuture, InferRequest, InferResponse, ModelMetadata, Parameters, Repository, RequestedOutput,
    ServerMetadata, TensorMetadata,
};
pub use rest::{openapi_routes, rest_routes, HEADER_CONTENT_LENGTH};
