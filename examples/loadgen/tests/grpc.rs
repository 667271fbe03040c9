//! The KServe v2 gRPC mode against `example-kserve`'s tonic service over a
//! repository that echoes its inputs (and refuses unknown models).

use std::sync::Arc;
use std::time::Duration;

use example_kserve::{
    grpc_service, BoxFuture, Error, InferRequest, InferResponse, ModelMetadata, Repository,
    ServerMetadata,
};
use loadgen::grpc::{infer_request, GrpcTarget};
use loadgen::v2::{generate, InputSpec};
use loadgen::{run_target, LoadConfig};
use tonic::transport::server::TcpIncoming;

/// Answers `echo` with its inputs.
struct Echo;

impl Repository for Echo {
    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "echo".into(),
            version: "1".into(),
            extensions: vec![],
        }
    }
    fn live(&self) -> bool {
        true
    }
    fn ready(&self) -> bool {
        true
    }
    fn model_metadata(&self, name: &str, _: Option<&str>) -> Result<ModelMetadata, Error> {
        Err(Error::not_found(format!("no metadata for {name}")))
    }
    fn model_ready(&self, name: &str, _: Option<&str>) -> Result<bool, Error> {
        Ok(name == "echo")
    }
    fn infer(
        &self,
        name: &str,
        _: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'static, Result<InferResponse, Error>> {
        let model_name = name.to_owned();
        Box::pin(async move {
            if model_name != "echo" {
                return Err(Error::not_found(format!("no model {model_name}")));
            }
            Ok(InferResponse {
                model_name,
                outputs: request.inputs,
                ..Default::default()
            })
        })
    }
}

async fn serve() -> hyper::Uri {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc_service(Arc::new(Echo)))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    format!("http://{addr}").parse().unwrap()
}

async fn grpc_run(uri: &hyper::Uri, model: &str, open: bool) -> loadgen::LoadReport {
    let specs: Vec<InputSpec> = ["INPUT0:FP32:1,16", "TEXT:BYTES:2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let requests = (0..4)
        .map(|seed| {
            let inputs: Vec<_> = specs.iter().map(|s| generate(s, seed, &[])).collect();
            infer_request(model, None, &inputs)
        })
        .collect();
    let target = GrpcTarget::connect(uri, 2, requests, Duration::from_secs(10))
        .await
        .unwrap();
    let mut config = LoadConfig::new(uri.clone())
        .duration(Duration::from_secs(60))
        .max_requests(200);
    config = if open {
        config.open_loop(1000.0)
    } else {
        config.concurrency(8)
    };
    run_target(Arc::new(target), &config).await.unwrap()
}

#[tokio::test]
async fn model_infer_with_raw_contents_answers_every_request() {
    let uri = serve().await;
    for open in [false, true] {
        let report = grpc_run(&uri, "echo", open).await;
        assert_eq!(report.ok, 200, "open {open}: {:?}", report.errors);
    }
    let report = grpc_run(&uri, "missing", false).await;
    assert_eq!(
        report.errors.get("grpc NotFound"),
        Some(&200),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn refuses_non_loopback_endpoints() {
    let uri: hyper::Uri = "http://192.0.2.1:8001".parse().unwrap();
    assert!(
        GrpcTarget::connect(&uri, 1, vec![Default::default()], Duration::from_secs(1))
            .await
            .is_err()
    );
}
