//! The model's input contract, checked before a request joins a batch:
//! token ids within the vocabulary, sequences within the model's positions,
//! one batch and sequence dimension per request, exact fixed dimensions,
//! at least one row. Each violation is 400 / `INVALID_ARGUMENT` naming the
//! input and the rule on v2 REST and gRPC (and on v1 where a client gives
//! tensors), and none reaches the model: its batcher admits nothing.

mod common;

use common::{models_config, start, Running};
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::model_infer_request::InferInputTensor;
use example_kserve::proto::{InferTensorContents, ModelInferRequest};
use hyper::StatusCode;
use serde_json::json;
use tonic::Code;

/// One input of a request: name, datatype, shape, data.
type Input = (&'static str, &'static str, Vec<usize>, Vec<i64>);

fn ids(shape: Vec<usize>, fill: i64) -> Input {
    let n = shape.iter().product();
    ("input_ids", "INT64", shape, vec![fill; n])
}

fn mask(shape: Vec<usize>) -> Input {
    let n = shape.iter().product();
    ("attention_mask", "INT64", shape, vec![1; n])
}

fn image(shape: Vec<usize>) -> Input {
    let n = shape.iter().product();
    ("input", "FP32", shape, vec![0; n])
}

/// The violations: model, inputs, the input named, the rule named.
fn violations() -> Vec<(&'static str, Vec<Input>, &'static str, &'static str)> {
    let mut beyond = ids(vec![1, 4], 1000);
    beyond.3[2] = 30522;
    let mut negative = ids(vec![1, 4], 1000);
    negative.3[0] = -1;
    vec![
        (
            "minilm",
            vec![beyond, mask(vec![1, 4])],
            "input_ids",
            "token_id",
        ),
        (
            "minilm",
            vec![negative, mask(vec![1, 4])],
            "input_ids",
            "token_id",
        ),
        (
            "minilm",
            vec![ids(vec![1, 4], 1000), mask(vec![1, 5])],
            "attention_mask",
            "sequence",
        ),
        (
            "minilm",
            vec![ids(vec![2, 4], 1000), mask(vec![1, 4])],
            "attention_mask",
            "rows",
        ),
        (
            "minilm",
            vec![ids(vec![1, 5000], 1000), mask(vec![1, 5000])],
            "input_ids",
            "sequence",
        ),
        (
            "minilm",
            vec![ids(vec![0, 4], 1000), mask(vec![0, 4])],
            "input_ids",
            "batch",
        ),
        (
            "minilm",
            vec![ids(vec![1, 4], 1000)],
            "attention_mask",
            "name",
        ),
        (
            "resnet50",
            vec![image(vec![0, 3, 224, 224])],
            "input",
            "batch",
        ),
        (
            "resnet50",
            vec![image(vec![1, 3, 225, 224])],
            "input",
            "shape",
        ),
        (
            "resnet50",
            vec![image(vec![1, 224, 224, 3])],
            "input",
            "shape",
        ),
    ]
}

async fn rest(s: &Running, model: &str, inputs: &[Input]) -> (StatusCode, String) {
    let inputs: Vec<_> = inputs
        .iter()
        .map(|(name, datatype, shape, data)| {
            json!({"name": name, "datatype": datatype, "shape": shape, "data": data})
        })
        .collect();
    let body = json!({ "inputs": inputs }).to_string();
    let r = s.post(&format!("/v2/models/{model}/infer"), body).await;
    (
        r.status,
        r.json()["error"].as_str().unwrap_or_default().to_string(),
    )
}

async fn grpc(addr: &str, model: &str, inputs: &[Input]) -> (Code, String) {
    let mut client = GrpcInferenceServiceClient::connect(addr.to_string())
        .await
        .unwrap();
    let inputs = inputs
        .iter()
        .map(|(name, datatype, shape, data)| InferInputTensor {
            name: name.to_string(),
            datatype: datatype.to_string(),
            shape: shape.iter().map(|&d| d as i64).collect(),
            parameters: Default::default(),
            contents: Some(if *datatype == "FP32" {
                InferTensorContents {
                    fp32_contents: data.iter().map(|&v| v as f32).collect(),
                    ..Default::default()
                }
            } else {
                InferTensorContents {
                    int64_contents: data.clone(),
                    ..Default::default()
                }
            }),
        })
        .collect();
    let request = ModelInferRequest {
        model_name: model.into(),
        inputs,
        ..Default::default()
    };
    match client.model_infer(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}

fn admitted(s: &Running, model: &str) -> u64 {
    s.server
        .deployment(model)
        .unwrap()
        .versions()
        .iter()
        .map(|v| v.batch_stats().requests)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn contract_violations_are_refused_before_batching() {
    let s = start(&models_config(&["resnet50", "minilm"], "")).await;
    let g = s.serve_grpc().await;
    let addr = format!("http://{}", g.addr);
    let before = (admitted(&s, "minilm"), admitted(&s, "resnet50"));
    for (model, inputs, input, rule) in violations() {
        let (status, message) = rest(&s, model, &inputs).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "REST {model} {rule}: {message}"
        );
        assert!(
            message.contains(&format!("{input:?}")) && message.contains(rule),
            "REST {model}: {message:?} should name {input} and {rule}"
        );
        let (code, message) = grpc(&addr, model, &inputs).await;
        assert_eq!(
            code,
            Code::InvalidArgument,
            "gRPC {model} {rule}: {message}"
        );
        assert!(
            message.contains(&format!("{input:?}")) && message.contains(rule),
            "gRPC {model}: {message:?} should name {input} and {rule}"
        );
    }
    // None reached a batcher, hence none reached a model.
    assert_eq!((admitted(&s, "minilm"), admitted(&s, "resnet50")), before);
    // A request within the contract passes (the counters can move).
    let (status, message) = rest(&s, "minilm", &[ids(vec![1, 4], 1000), mask(vec![1, 4])]).await;
    assert_eq!(status, StatusCode::OK, "{message}");
    assert_eq!(admitted(&s, "minilm"), before.0 + 1);
    g.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v1_tensors_follow_the_same_contract() {
    let s = start(common::TEST_CONFIG).await;
    let before = admitted(&s, "identity");
    for (body, input, rule) in [
        (
            json!({"inputs": [{"name": "x", "datatype": "FP32", "shape": [0, 2], "data": []}]}),
            "x",
            "batch",
        ),
        (
            json!({"inputs": [
                {"name": "x", "datatype": "FP32", "shape": [1, 1], "data": [1.0]},
                {"name": "y", "datatype": "FP32", "shape": [2, 1], "data": [1.0, 2.0]}
            ]}),
            "y",
            "rows",
        ),
    ] {
        let r = s.post("/v1/models/identity/infer", body.to_string()).await;
        let message = r.json()["error"].as_str().unwrap().to_string();
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{message}");
        assert!(
            message.contains(&format!("{input:?}")) && message.contains(rule),
            "{message:?} should name {input} and {rule}"
        );
        let (code, message) = {
            let g = s.serve_grpc().await;
            let got = grpc_identity(&format!("http://{}", g.addr), &body).await;
            g.shutdown().await;
            got
        };
        assert_eq!(code, Code::InvalidArgument, "{message}");
        assert!(message.contains(rule), "{message}");
    }
    assert_eq!(admitted(&s, "identity"), before);
    s.shutdown().await;
}

/// The same tensors as a v1 body, over gRPC to the identity model.
async fn grpc_identity(addr: &str, body: &serde_json::Value) -> (Code, String) {
    let mut client = GrpcInferenceServiceClient::connect(addr.to_string())
        .await
        .unwrap();
    let inputs = body["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| InferInputTensor {
            name: t["name"].as_str().unwrap().into(),
            datatype: "FP32".into(),
            shape: t["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_i64().unwrap())
                .collect(),
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp32_contents: t["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap() as f32)
                    .collect(),
                ..Default::default()
            }),
        })
        .collect();
    let request = ModelInferRequest {
        model_name: "identity".into(),
        inputs,
        ..Default::default()
    };
    match client.model_infer(request).await {
        Ok(_) => (Code::Ok, String::new()),
        Err(s) => (s.code(), s.message().to_string()),
    }
}
