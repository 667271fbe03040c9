//! The v2 gRPC service (`inference.GRPCInferenceService`), generated from
//! `proto/grpc_predict_v2.proto`, with `grpc.health.v1` and reflection.

use std::collections::HashMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use example_tensor::{DataType, NamedTensor, Tensor, TensorData};
use serde_json::Value;
use tonic::{Request, Response, Status};

use crate::json::checked_shape;
use crate::{infer, raw, Error, InferRequest, Limits, Parameters, Repository, RequestedOutput};

/// The messages, server and client generated from the public
/// `grpc_predict_v2.proto` (package `inference`).
pub mod proto {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("inference");
}

use proto::grpc_inference_service_server::{GrpcInferenceService, GrpcInferenceServiceServer};
use proto::infer_parameter::ParameterChoice;
use proto::model_infer_request::InferInputTensor;
use proto::model_infer_response::InferOutputTensor;
use proto::model_metadata_response::TensorMetadata as ProtoTensorMetadata;
use proto::{InferParameter, InferTensorContents};

/// The encoded `FileDescriptorSet` of `grpc_predict_v2.proto`, for
/// reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("inference_descriptor");

/// `inference.GRPCInferenceService` over a [`Repository`].
///
/// Status codes follow [`Error::grpc_code`]: `INVALID_ARGUMENT`,
/// `NOT_FOUND`, `RESOURCE_EXHAUSTED` (limits, full queue), `UNAVAILABLE`,
/// `DEADLINE_EXCEEDED`. The caller's `grpc-timeout` becomes
/// [`InferRequest::deadline`]. Outputs come back in `raw_output_contents`
/// when the request used `raw_input_contents` or an output is `FP16`
/// (which has no typed contents), else in typed `contents`.
#[derive(Debug)]
pub struct InferenceService<R> {
    repo: Arc<R>,
    limits: Limits,
}

/// The tonic server for `repo` with default [`Limits`], to add to a tonic
/// router.
pub fn grpc_service<R: Repository>(
    repo: Arc<R>,
) -> GrpcInferenceServiceServer<InferenceService<R>> {
    grpc_service_with_limits(repo, Limits::default())
}

/// The tonic server for `repo`: messages up to [`Limits::max_body_bytes`],
/// tensors up to [`Limits::max_elements`].
pub fn grpc_service_with_limits<R: Repository>(
    repo: Arc<R>,
    limits: Limits,
) -> GrpcInferenceServiceServer<InferenceService<R>> {
    GrpcInferenceServiceServer::new(InferenceService { repo, limits })
        .max_decoding_message_size(limits.max_body_bytes)
        .max_encoding_message_size(usize::MAX)
}

/// The standard `grpc.health.v1.Health` service, reporting `repo.ready()`
/// for the server (`""`) and `inference.GRPCInferenceService`: set before
/// this returns, then polled every `every` by a task that ends when the
/// repository is dropped.
pub async fn health_service<R: Repository>(
    repo: &Arc<R>,
    every: Duration,
) -> tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health> {
    let (reporter, server) = tonic_health::server::health_reporter();
    async fn report(reporter: &tonic_health::server::HealthReporter, ready: bool) {
        let status = if ready {
            tonic_health::ServingStatus::Serving
        } else {
            tonic_health::ServingStatus::NotServing
        };
        for name in ["", "inference.GRPCInferenceService"] {
            reporter.set_service_status(name, status).await;
        }
    }
    report(&reporter, repo.ready()).await;
    let repo: Weak<R> = Arc::downgrade(repo);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(ready) = repo.upgrade().map(|r| r.ready()) else {
                break;
            };
            report(&reporter, ready).await;
        }
    });
    server
}

/// gRPC server reflection (v1) for `inference.GRPCInferenceService` and
/// `grpc.health.v1.Health`.
pub fn reflection_service() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<
        impl tonic_reflection::server::v1::ServerReflection,
    >,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

fn version(v: &str) -> Option<&str> {
    (!v.is_empty()).then_some(v)
}

fn to_json(p: HashMap<String, InferParameter>) -> Parameters {
    p.into_iter()
        .filter_map(|(k, v)| {
            let v = match v.parameter_choice? {
                ParameterChoice::BoolParam(b) => Value::from(b),
                ParameterChoice::Int64Param(i) => Value::from(i),
                ParameterChoice::StringParam(s) => Value::from(s),
                ParameterChoice::DoubleParam(d) => Value::from(d),
                ParameterChoice::Uint64Param(u) => Value::from(u),
            };
            Some((k, v))
        })
        .collect()
}

fn from_json(p: Parameters) -> HashMap<String, InferParameter> {
    p.into_iter()
        .map(|(k, v)| {
            let choice = match v {
                Value::Bool(b) => ParameterChoice::BoolParam(b),
                Value::Number(n) => match (n.as_i64(), n.as_u64()) {
                    (Some(i), _) => ParameterChoice::Int64Param(i),
                    (None, Some(u)) => ParameterChoice::Uint64Param(u),
                    _ => ParameterChoice::DoubleParam(n.as_f64().unwrap_or(f64::NAN)),
                },
                Value::String(s) => ParameterChoice::StringParam(s),
                other => ParameterChoice::StringParam(other.to_string()),
            };
            (
                k,
                InferParameter {
                    parameter_choice: Some(choice),
                },
            )
        })
        .collect()
}

/// Typed contents to tensor data, checking `count`.
fn from_contents(
    name: &str,
    datatype: DataType,
    count: usize,
    c: InferTensorContents,
) -> Result<TensorData, Error> {
    fn narrow<A: Copy, B: TryFrom<A>>(name: &str, d: DataType, v: Vec<A>) -> Result<Vec<B>, Error> {
        v.into_iter()
            .map(|x| B::try_from(x))
            .collect::<Result<_, _>>()
            .map_err(|_| {
                Error::bad_request(format!("input {name:?}: a value is out of range for {d}"))
            })
    }
    let data = match datatype {
        DataType::Bool => TensorData::Bool(c.bool_contents),
        DataType::Int8 => TensorData::Int8(narrow(name, datatype, c.int_contents)?),
        DataType::Int16 => TensorData::Int16(narrow(name, datatype, c.int_contents)?),
        DataType::Int32 => TensorData::Int32(c.int_contents),
        DataType::Int64 => TensorData::Int64(c.int64_contents),
        DataType::Uint8 => TensorData::Uint8(narrow(name, datatype, c.uint_contents)?),
        DataType::Uint16 => TensorData::Uint16(narrow(name, datatype, c.uint_contents)?),
        DataType::Uint32 => TensorData::Uint32(c.uint_contents),
        DataType::Uint64 => TensorData::Uint64(c.uint64_contents),
        DataType::Fp32 => TensorData::Fp32(c.fp32_contents),
        DataType::Fp64 => TensorData::Fp64(c.fp64_contents),
        DataType::Bytes => TensorData::Bytes(c.bytes_contents),
        DataType::Fp16 => {
            return Err(Error::bad_request(format!(
                "input {name:?}: FP16 has no typed contents; send it in raw_input_contents"
            )))
        }
    };
    if data.len() != count {
        return Err(Error::bad_request(format!(
            "input {name:?}: shape holds {count} elements but {} {datatype} contents were given",
            data.len()
        )));
    }
    Ok(data)
}

fn to_contents(data: TensorData) -> InferTensorContents {
    let mut c = InferTensorContents::default();
    match data {
        TensorData::Bool(v) => c.bool_contents = v,
        TensorData::Int8(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int16(v) => c.int_contents = v.into_iter().map(i32::from).collect(),
        TensorData::Int32(v) => c.int_contents = v,
        TensorData::Int64(v) => c.int64_contents = v,
        TensorData::Uint8(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint16(v) => c.uint_contents = v.into_iter().map(u32::from).collect(),
        TensorData::Uint32(v) => c.uint_contents = v,
        TensorData::Uint64(v) => c.uint64_contents = v,
        TensorData::Fp32(v) => c.fp32_contents = v,
        TensorData::Fp64(v) => c.fp64_contents = v,
        TensorData::Bytes(v) => c.bytes_contents = v,
        // Callers send FP16 raw.
        TensorData::Fp16(v) => c.fp32_contents = v.into_iter().map(|x| x.to_f32()).collect(),
    }
    c
}

fn decode_request(
    msg: proto::ModelInferRequest,
    limits: &Limits,
) -> Result<(InferRequest, bool), Error> {
    let raw_inputs = !msg.raw_input_contents.is_empty();
    if raw_inputs && msg.raw_input_contents.len() != msg.inputs.len() {
        return Err(Error::bad_request(format!(
            "{} raw_input_contents for {} inputs",
            msg.raw_input_contents.len(),
            msg.inputs.len()
        )));
    }
    let mut raws = msg.raw_input_contents.into_iter();
    let mut inputs = Vec::with_capacity(msg.inputs.len());
    for input in msg.inputs {
        let InferInputTensor {
            name,
            datatype,
            shape,
            contents,
            ..
        } = input;
        let datatype = DataType::parse(&datatype).ok_or_else(|| {
            Error::bad_request(format!("input {name:?}: unknown datatype {datatype:?}"))
        })?;
        let (shape, count) = checked_shape(&name, &shape, limits)?;
        let data = match (raws.next(), contents) {
            (Some(_), Some(_)) => {
                return Err(Error::bad_request(format!(
                    "input {name:?} has both contents and raw_input_contents"
                )))
            }
            (Some(raw), None) => raw::decode(&name, datatype, count, raw)?,
            (None, contents) => {
                from_contents(&name, datatype, count, contents.unwrap_or_default())?
            }
        };
        let tensor = Tensor::new(shape, data).map_err(|e| Error::bad_request(e.to_string()))?;
        inputs.push(NamedTensor::new(name, tensor));
    }
    Ok((
        InferRequest {
            id: (!msg.id.is_empty()).then_some(msg.id),
            parameters: to_json(msg.parameters),
            inputs,
            outputs: msg
                .outputs
                .into_iter()
                .map(|o| RequestedOutput {
                    name: o.name,
                    parameters: to_json(o.parameters),
                })
                .collect(),
            deadline: None,
        },
        raw_inputs,
    ))
}

fn shape_i64(shape: &[usize]) -> Vec<i64> {
    shape.iter().map(|&d| d as i64).collect()
}

#[tonic::async_trait]
impl<R: Repository> GrpcInferenceService for InferenceService<R> {
    async fn server_live(
        &self,
        _: Request<proto::ServerLiveRequest>,
    ) -> Result<Response<proto::ServerLiveResponse>, Status> {
        Ok(Response::new(proto::ServerLiveResponse {
            live: self.repo.live(),
        }))
    }

    async fn server_ready(
        &self,
        _: Request<proto::ServerReadyRequest>,
    ) -> Result<Response<proto::ServerReadyResponse>, Status> {
        Ok(Response::new(proto::ServerReadyResponse {
            ready: self.repo.ready(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<proto::ModelReadyRequest>,
    ) -> Result<Response<proto::ModelReadyResponse>, Status> {
        let r = request.into_inner();
        let ready = self.repo.model_ready(&r.name, version(&r.version))?;
        Ok(Response::new(proto::ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<proto::ServerMetadataRequest>,
    ) -> Result<Response<proto::ServerMetadataResponse>, Status> {
        let m = self.repo.server_metadata();
        Ok(Response::new(proto::ServerMetadataResponse {
            name: m.name,
            version: m.version,
            extensions: m.extensions,
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<proto::ModelMetadataRequest>,
    ) -> Result<Response<proto::ModelMetadataResponse>, Status> {
        let r = request.into_inner();
        let m = self.repo.model_metadata(&r.name, version(&r.version))?;
        let tensors = |ts: Vec<crate::TensorMetadata>| {
            ts.into_iter()
                .map(|t| ProtoTensorMetadata {
                    name: t.name,
                    datatype: t.datatype.as_str().to_owned(),
                    shape: t.shape,
                })
                .collect()
        };
        Ok(Response::new(proto::ModelMetadataResponse {
            name: m.name,
            versions: m.versions,
            platform: m.platform,
            inputs: tensors(m.inputs),
            outputs: tensors(m.outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<proto::ModelInferRequest>,
    ) -> Result<Response<proto::ModelInferResponse>, Status> {
        let timeout = request
            .metadata()
            .get("grpc-timeout")
            .map(|v| v.as_bytes().to_vec());
        let msg = request.into_inner();
        let name = msg.model_name.clone();
        let model_version = msg.model_version.clone();
        let (mut request, raw_inputs) = decode_request(msg, &self.limits)?;
        request.deadline = infer::deadline(timeout.as_deref(), &request.parameters)?;
        let answer = infer::run(&*self.repo, &name, version(&model_version), request).await?;
        let response = answer.response;
        let raw_outputs = raw_inputs
            || response
                .outputs
                .iter()
                .any(|o| o.tensor.datatype() == DataType::Fp16);
        let mut outputs = Vec::with_capacity(response.outputs.len());
        let mut raw_output_contents = Vec::new();
        for out in response.outputs {
            let shape = shape_i64(&out.tensor.shape);
            let datatype = out.tensor.datatype().as_str().to_owned();
            let contents = if raw_outputs {
                let mut buf = Vec::new();
                raw::encode(&out.tensor.data, &mut buf);
                raw_output_contents.push(Bytes::from(buf));
                None
            } else {
                Some(to_contents(out.tensor.data))
            };
            outputs.push(InferOutputTensor {
                name: out.name,
                datatype,
                shape,
                parameters: HashMap::new(),
                contents,
            });
        }
        Ok(Response::new(proto::ModelInferResponse {
            model_name: response.model_name,
            model_version: response.model_version.unwrap_or_default(),
            id: response.id.unwrap_or_default(),
            parameters: from_json(response.parameters),
            outputs,
            raw_output_contents,
        }))
    }
}
