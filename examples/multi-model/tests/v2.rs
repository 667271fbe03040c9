//! KServe v2 over REST and gRPC against the server's deployments (identity
//! here): the same path through the crates as the v1 routes.

mod common;

use std::collections::HashMap;

use common::{start, TEST_CONFIG};
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::model_infer_request::InferInputTensor;
use example_kserve::proto::{
    InferTensorContents, ModelInferRequest, ModelMetadataRequest, ServerReadyRequest,
};
use hyper::StatusCode;
use tonic::Code;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rest_v2_reaches_the_deployments() {
    let s = start(TEST_CONFIG).await;
    assert_eq!(s.get("/v2/health/ready").await.status, StatusCode::OK);
    let meta = s.get("/v2/models/identity").await.json();
    assert_eq!(meta["versions"], serde_json::json!(["1", "2"]));
    let body = serde_json::json!({
        "id": "r1",
        "inputs": [{"name": "INPUT0", "datatype": "INT32", "shape": [1, 3], "data": [1, 2, 3]}]
    });
    let r = s
        .post("/v2/models/identity/versions/2/infer", body.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let out = r.json();
    assert_eq!(out["id"], "r1");
    assert_eq!(out["model_version"], "2");
    assert_eq!(out["outputs"][0]["data"], serde_json::json!([1, 2, 3]));
    assert!(r.headers.contains_key("x-request-id"));
    let r = s.post("/v2/models/nope/infer", body.to_string()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = s
        .post("/v2/models/identity/versions/7/infer", body.to_string())
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_v2_reaches_the_deployments() {
    let s = start(TEST_CONFIG).await;
    let grpc = s.serve_grpc().await;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", grpc.addr))
        .await
        .unwrap();
    assert!(
        client
            .server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let meta = client
        .model_metadata(ModelMetadataRequest {
            name: "identity".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, ["1", "2"]);
    let request = ModelInferRequest {
        model_name: "identity".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![2, 1],
            parameters: HashMap::new(),
            contents: Some(InferTensorContents {
                fp32_contents: vec![0.5, 1.5],
                ..Default::default()
            }),
        }],
        ..Default::default()
    };
    let out = client
        .model_infer(request.clone())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(out.outputs[0].shape, [2, 1]);
    let data = out.outputs[0]
        .contents
        .as_ref()
        .map(|c| c.fp32_contents.clone())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| {
            out.raw_output_contents[0]
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        });
    assert_eq!(data, [0.5, 1.5]);
    let mut unknown = request;
    unknown.model_name = "nope".into();
    let err = client.model_infer(unknown).await.unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    grpc.shutdown().await;
    s.shutdown().await;
}
