//! A tonic gRPC service answering through `convoy-batcher`.
//!
//! `convoy.examples.Mlp/Infer` takes `InferRequest { repeated float inputs = 1; }`
//! and answers `InferResponse { repeated float outputs = 1; }` with the same
//! MLP as the batch-axum example. Concurrent calls share forward passes.
//!
//! The messages, server and client are generated from `proto/mlp.proto` by
//! `tonic-prost-build` at build time, with the `protoc` binary vendored by
//! `protoc-bin-vendored` (no system protoc needed). The caller's `grpc-timeout` becomes the
//! item's deadline in the batcher (`BatchLayer::deadline_fn`), so a call
//! whose client has given up never reaches the model.
//!
//! | batcher error | gRPC status |
//! |---|---|
//! | `QueueFull` | `RESOURCE_EXHAUSTED` |
//! | `DeadlineExceeded` | `DEADLINE_EXCEEDED` |
//! | `Closed` | `UNAVAILABLE` |
//! | wrong input width | `INVALID_ARGUMENT` |
//!
//! ```
//! use std::sync::Arc;
//! use convoy_batcher::BatchConfig;
//! use example_mlp::Mlp;
//! use example_batch_tonic::{proto::InferRequest, MlpService};
//!
//! # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Arc::new(Mlp::seeded(&[4, 8, 2], 1)?);
//! let svc = MlpService::new(model, BatchConfig::builder().max_batch_size(16).build()?);
//! let answer = svc.infer(tonic::Request::new(InferRequest { inputs: vec![0.5; 4] })).await?;
//! assert_eq!(answer.into_inner().outputs.len(), 2);
//! // Serve it: tonic::transport::Server::builder().add_service(svc.into_server()).serve(addr).await?;
//! # Ok(()) }
//! ```

use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::{
    Batch, BatchConfig, BatchHandle, BatchLayer, Closed, DeadlineExceeded, QueueFull,
};
use example_mlp::{InputWidth, Mlp};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};
use tower::{BoxError, Layer, ServiceExt};

/// The messages, server (`mlp_server`) and client (`mlp_client`) generated
/// from `proto/mlp.proto` (package `convoy.examples`).
pub mod proto {
    #![allow(missing_docs, missing_debug_implementations, clippy::all)]
    tonic::include_proto!("convoy.examples");
}

use proto::{InferRequest, InferResponse};

/// Full name of the gRPC service.
pub const SERVICE_NAME: &str = proto::mlp_server::SERVICE_NAME;
/// HTTP/2 path of the `Infer` method.
pub const INFER_PATH: &str = "/convoy.examples.Mlp/Infer";

/// One queued call: its inputs and the caller's deadline.
#[derive(Debug)]
pub struct Job {
    inputs: Vec<f32>,
    deadline: Option<Instant>,
}

/// The gRPC service: the model behind a batcher.
#[derive(Debug, Clone)]
pub struct MlpService {
    batched: Batch<Job, Vec<f32>>,
    input_dim: usize,
}

impl MlpService {
    /// Puts `model` behind a batcher configured by `config`, each call's
    /// `grpc-timeout` used as its deadline. Must run inside a tokio runtime.
    pub fn new(model: Arc<Mlp>, config: BatchConfig) -> Self {
        let input_dim = model.input_dim();
        let batched = BatchLayer::<Job, Vec<f32>>::new(config)
            .deadline_fn(|job: &Job| job.deadline)
            .layer(tower::service_fn(move |jobs: Vec<Job>| {
                let model = Arc::clone(&model);
                async move {
                    let inputs = jobs.into_iter().map(|job| job.inputs).collect();
                    tokio::task::spawn_blocking(move || model.infer_batch(inputs)).await
                }
            }));
        Self { batched, input_dim }
    }

    /// The tonic server for this service, to add to a tonic router.
    pub fn into_server(self) -> proto::mlp_server::MlpServer<MlpService> {
        proto::mlp_server::MlpServer::new(self)
    }

    /// The batcher's handle: statistics, live settings, `close()`.
    pub fn handle(&self) -> BatchHandle {
        self.batched.handle()
    }

    /// The `Infer` method.
    pub async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        let deadline = request
            .metadata()
            .get("grpc-timeout")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_grpc_timeout)
            .map(|timeout| Instant::now() + timeout);
        let inputs = request.into_inner().inputs;
        if inputs.len() != self.input_dim {
            let err = InputWidth {
                expected: self.input_dim,
                got: inputs.len(),
            };
            return Err(Status::invalid_argument(err.to_string()));
        }
        let outputs = self
            .batched
            .clone()
            .oneshot(Job { inputs, deadline })
            .await
            .map_err(status_from)?;
        Ok(Response::new(InferResponse { outputs }))
    }
}

/// The gRPC status for an error from the batched model.
pub fn status_from(err: BoxError) -> Status {
    if err.is::<QueueFull>() {
        Status::resource_exhausted(err.to_string())
    } else if err.is::<DeadlineExceeded>() {
        Status::deadline_exceeded(err.to_string())
    } else if err.is::<Closed>() {
        Status::unavailable(err.to_string())
    } else if let Some(width) = err.downcast_ref::<InputWidth>() {
        Status::invalid_argument(width.to_string())
    } else {
        Status::internal(err.to_string())
    }
}

/// Parses a `grpc-timeout` header value (the KServe protocol layer's
/// parser, shared so the two services read deadlines the same way).
pub use example_kserve::parse_grpc_timeout;

#[tonic::async_trait]
impl proto::mlp_server::Mlp for MlpService {
    async fn infer(
        &self,
        request: Request<InferRequest>,
    ) -> Result<Response<InferResponse>, Status> {
        MlpService::infer(self, request).await
    }
}

/// A client for the `Infer` method.
#[derive(Debug, Clone)]
pub struct MlpClient {
    grpc: proto::mlp_client::MlpClient<Channel>,
}

impl MlpClient {
    /// Connects to `uri` (e.g. `http://127.0.0.1:50051`).
    pub async fn connect(uri: String) -> Result<Self, BoxError> {
        let channel = Channel::from_shared(uri)?.connect().await?;
        Ok(Self {
            grpc: proto::mlp_client::MlpClient::new(channel),
        })
    }

    /// Calls `Infer`, with an optional `grpc-timeout`.
    pub async fn infer(
        &mut self,
        inputs: Vec<f32>,
        timeout: Option<Duration>,
    ) -> Result<Vec<f32>, Status> {
        let mut request = Request::new(InferRequest { inputs });
        if let Some(timeout) = timeout {
            request.set_timeout(timeout);
        }
        let response = self.grpc.infer(request).await?;
        Ok(response.into_inner().outputs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("5M"), Some(Duration::from_secs(300)));
        assert_eq!(parse_grpc_timeout("7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout("0n"), Some(Duration::ZERO));
        for bad in ["", "m", "100", "123456789m", "1x", "-1m", "1.5S", "é"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad}");
        }
    }

    #[test]
    fn batcher_errors_map_to_codes() {
        assert_eq!(
            status_from(Box::new(QueueFull::default())).code(),
            Code::ResourceExhausted
        );
        assert_eq!(
            status_from(Box::new(DeadlineExceeded::default())).code(),
            Code::DeadlineExceeded
        );
        assert_eq!(
            status_from(Box::new(Closed::default())).code(),
            Code::Unavailable
        );
        let width = InputWidth {
            expected: 4,
            got: 1,
        };
        assert_eq!(status_from(Box::new(width)).code(), Code::InvalidArgument);
        assert_eq!(status_from("boom".into()).code(), Code::Internal);
    }
}
