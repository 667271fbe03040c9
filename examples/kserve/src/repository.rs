//! What a server implements to speak the protocol: the [`Repository`]
//! trait and the plain types it takes and returns.

use std::future::Future;
use std::pin::Pin;

use example_tensor::{DataType, NamedTensor};
use serde::Serialize;
use tokio::time::Instant;
use utoipa::ToSchema;

use crate::Error;

/// A boxed, sendable future, as [`Repository::infer`] returns.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Request, tensor and response parameters: a JSON object on REST, a map of
/// `InferParameter` (bool, int64, uint64, double or string) on gRPC.
pub type Parameters = serde_json::Map<String, serde_json::Value>;

/// The models a server serves, as the protocol layer sees them.
///
/// The protocol layer parses and checks requests (JSON, Triton's binary
/// tensors, gRPC contents), echoes the request id, keeps only the requested
/// outputs and encodes them; a repository only computes tensors. Both
/// [`rest_routes`](crate::rest_routes) and
/// [`grpc_service`](crate::grpc_service) take one.
pub trait Repository: Send + Sync + 'static {
    /// Name, version and protocol extensions of the server.
    fn server_metadata(&self) -> ServerMetadata;

    /// Whether the server answers at all (`/v2/health/live`).
    fn live(&self) -> bool;

    /// Whether the server can serve inference (`/v2/health/ready`).
    fn ready(&self) -> bool;

    /// The metadata of a model; `version` `None` means the server's choice.
    /// An unknown model or version is [`Error::not_found`].
    fn model_metadata(&self, name: &str, version: Option<&str>) -> Result<ModelMetadata, Error>;

    /// Facts about a model beyond its [`ModelMetadata`], such as the state
    /// of a rollout between its versions: the `parameters` object of the
    /// REST metadata answer (`GET /v2/models/{name}`), omitted when empty.
    /// Read right after [`model_metadata`](Self::model_metadata) for the
    /// same model and version. gRPC's `ModelMetadataResponse` has no field
    /// for them, so they are REST-only. The default is none.
    fn model_parameters(&self, name: &str, version: Option<&str>) -> Result<Parameters, Error> {
        let _ = (name, version);
        Ok(Parameters::new())
    }

    /// Whether a model (version) is ready; unknown ones are
    /// [`Error::not_found`].
    fn model_ready(&self, name: &str, version: Option<&str>) -> Result<bool, Error>;

    /// Runs one request. The outputs may include ones not requested: the
    /// protocol layer drops those. A request past
    /// [`InferRequest::deadline`] is answered with
    /// [`ErrorKind::DeadlineExceeded`](crate::ErrorKind::DeadlineExceeded)
    /// by the protocol layer whether or not the future finishes.
    fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'static, Result<InferResponse, Error>>;
}

/// `GET /v2`: who the server is.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ServerMetadata {
    /// Server name.
    pub name: String,
    /// Server version.
    pub version: String,
    /// Protocol extensions it supports (e.g. `"binary_tensor_data"`).
    pub extensions: Vec<String>,
}

/// A tensor in a model's metadata.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TensorMetadata {
    /// Input or output name.
    pub name: String,
    /// Element type.
    #[serde(serialize_with = "serialize_datatype")]
    #[schema(schema_with = crate::openapi::datatype_schema)]
    pub datatype: DataType,
    /// Dimensions; `-1` for a dynamic one (the batch dimension, a sequence
    /// length).
    pub shape: Vec<i64>,
}

fn serialize_datatype<S: serde::Serializer>(d: &DataType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

/// `GET /v2/models/{name}`: what a model takes and returns. On REST the
/// answer also carries the repository's
/// [`model_parameters`](Repository::model_parameters), when there are any.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct ModelMetadata {
    /// Model name.
    pub name: String,
    /// The versions served.
    pub versions: Vec<String>,
    /// The framework, e.g. `"pytorch_torchscript"`.
    pub platform: String,
    /// Inputs.
    pub inputs: Vec<TensorMetadata>,
    /// Outputs.
    pub outputs: Vec<TensorMetadata>,
}

impl ModelMetadata {
    /// Checks request inputs against the metadata: every input known and
    /// given once, with its datatype, rank and fixed dimensions. A server
    /// calls it from [`Repository::infer`] with its cached metadata.
    pub fn check_inputs(&self, inputs: &[NamedTensor]) -> Result<(), Error> {
        for (i, input) in inputs.iter().enumerate() {
            let Some(spec) = self.inputs.iter().find(|s| s.name == input.name) else {
                return Err(Error::bad_request(format!(
                    "model {} has no input named {:?}",
                    self.name, input.name
                )));
            };
            if inputs[..i].iter().any(|o| o.name == input.name) {
                return Err(Error::bad_request(format!(
                    "input {:?} is given twice",
                    input.name
                )));
            }
            let datatype = input.tensor.datatype();
            if datatype != spec.datatype {
                return Err(Error::bad_request(format!(
                    "input {:?} must be {}, not {datatype}",
                    input.name, spec.datatype
                )));
            }
            let shape = &input.tensor.shape;
            let fits = shape.len() == spec.shape.len()
                && shape
                    .iter()
                    .zip(&spec.shape)
                    .all(|(&d, &s)| s < 0 || i64::try_from(d) == Ok(s));
            if !fits {
                return Err(Error::bad_request(format!(
                    "input {:?} has shape {shape:?}, the model takes {:?}",
                    input.name, spec.shape
                )));
            }
        }
        if let Some(missing) = self
            .inputs
            .iter()
            .find(|s| !inputs.iter().any(|i| i.name == s.name))
        {
            return Err(Error::bad_request(format!(
                "input {:?} is missing",
                missing.name
            )));
        }
        Ok(())
    }
}

/// An output the caller asked for, with its parameters (e.g. Triton's
/// `binary_data`).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct RequestedOutput {
    /// Output name.
    pub name: String,
    /// Its parameters.
    pub parameters: Parameters,
}

/// One inference request, decoded.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferRequest {
    /// The caller's id, echoed in the response.
    pub id: Option<String>,
    /// Request parameters.
    pub parameters: Parameters,
    /// The input tensors, checked against their shapes.
    pub inputs: Vec<NamedTensor>,
    /// The outputs asked for; empty means all.
    pub outputs: Vec<RequestedOutput>,
    /// When the caller gives up (from `grpc-timeout` or Triton's `timeout`
    /// parameter); a batcher should drop the request after it.
    pub deadline: Option<Instant>,
}

/// One inference answer, before encoding.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct InferResponse {
    /// The model that answered.
    pub model_name: String,
    /// Its version.
    pub model_version: Option<String>,
    /// The request id (the protocol layer fills it in from the request).
    pub id: Option<String>,
    /// Response parameters.
    pub parameters: Parameters,
    /// Output tensors.
    pub outputs: Vec<NamedTensor>,
}
