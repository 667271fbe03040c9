//! `inference.GRPCInferenceService` over a real loopback HTTP/2 connection
//! with the generated client: typed and raw contents, deadlines from
//! `grpc-timeout`, status codes, health and reflection.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::infer_parameter::ParameterChoice;
use example_kserve::proto::model_infer_request::{InferInputTensor, InferRequestedOutputTensor};
use example_kserve::proto::{
    InferParameter, InferTensorContents, ModelInferRequest, ModelMetadataRequest,
    ModelReadyRequest, ServerLiveRequest, ServerMetadataRequest, ServerReadyRequest,
};
use example_kserve::{
    grpc_service, grpc_service_with_limits, health_service, reflection_service, Limits,
};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;
use tonic::Code;

async fn serve(limits: Limits) -> String {
    let repo = common::repo();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let health = health_service(&repo, Duration::from_millis(50)).await;
    let reflection = reflection_service().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(grpc_service_with_limits(repo, limits))
            .add_service(health)
            .add_service(reflection)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

async fn client() -> GrpcInferenceServiceClient<Channel> {
    GrpcInferenceServiceClient::connect(serve(Limits::default()).await)
        .await
        .unwrap()
}

fn input(
    name: &str,
    datatype: &str,
    shape: &[i64],
    contents: InferTensorContents,
) -> InferInputTensor {
    InferInputTensor {
        name: name.into(),
        datatype: datatype.into(),
        shape: shape.to_vec(),
        parameters: HashMap::new(),
        contents: Some(contents),
    }
}

fn request(model: &str, inputs: Vec<InferInputTensor>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        inputs,
        ..Default::default()
    }
}

#[tokio::test]
async fn health_and_metadata() {
    let mut c = client().await;
    assert!(
        c.server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    assert!(
        c.server_ready(ServerReadyRequest {})
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let server = c
        .server_metadata(ServerMetadataRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(server.name, "convoy-test");
    assert_eq!(server.extensions, vec!["binary_tensor_data"]);
    let meta = c
        .model_metadata(ModelMetadataRequest {
            name: "identity".into(),
            version: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(meta.versions, vec!["1"]);
    assert_eq!(meta.inputs[0].datatype, "FP32");
    assert_eq!(meta.inputs[0].shape, vec![-1, -1]);
    let ready = |name: &str, version: &str| ModelReadyRequest {
        name: name.into(),
        version: version.into(),
    };
    assert!(
        c.model_ready(ready("identity", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    assert!(
        !c.model_ready(ready("cold", ""))
            .await
            .unwrap()
            .into_inner()
            .ready
    );
    let unknown = c.model_ready(ready("nope", "")).await.unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    let unknown = c
        .model_metadata(ModelMetadataRequest {
            name: "identity".into(),
            version: "7".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert!(
        unknown.message().contains("no version \"7\""),
        "{}",
        unknown.message()
    );
}

#[tokio::test]
async fn typed_contents_round_trip() {
    let mut c = client().await;
    let mut req = request(
        "identity",
        vec![
            input(
                "f",
                "FP32",
                &[2, 2],
                InferTensorContents {
                    fp32_contents: vec![1.0, -2.5, 3.0, 4.25],
                    ..Default::default()
                },
            ),
            input(
                "i8",
                "INT8",
                &[3],
                InferTensorContents {
                    int_contents: vec![-128, 0, 127],
                    ..Default::default()
                },
            ),
            input(
                "u16",
                "UINT16",
                &[1],
                InferTensorContents {
                    uint_contents: vec![65535],
                    ..Default::default()
                },
            ),
            input(
                "b",
                "BYTES",
                &[2],
                InferTensorContents {
                    bytes_contents: vec![Bytes::from("hé"), Bytes::new()],
                    ..Default::default()
                },
            ),
            input(
                "t",
                "BOOL",
                &[1],
                InferTensorContents {
                    bool_contents: vec![true],
                    ..Default::default()
                },
            ),
        ],
    );
    req.id = "call-1".into();
    req.parameters.insert(
        "k".into(),
        InferParameter {
            parameter_choice: Some(ParameterChoice::Int64Param(-3)),
        },
    );
    let out = c.model_infer(req.clone()).await.unwrap().into_inner();
    assert_eq!(out.id, "call-1");
    assert_eq!(out.model_name, "identity");
    assert_eq!(out.model_version, "1");
    assert_eq!(out.parameters["k"], req.parameters["k"]);
    assert!(out.raw_output_contents.is_empty());
    assert_eq!(out.outputs.len(), 5);
    for (got, sent) in out.outputs.iter().zip(&req.inputs) {
        assert_eq!(got.name, sent.name);
        assert_eq!(got.datatype, sent.datatype);
        assert_eq!(got.shape, sent.shape);
        assert_eq!(got.contents, sent.contents);
    }
    // Only the outputs asked for, in their order.
    req.outputs = vec![
        InferRequestedOutputTensor {
            name: "b".into(),
            parameters: HashMap::new(),
        },
        InferRequestedOutputTensor {
            name: "f".into(),
            parameters: HashMap::new(),
        },
    ];
    let out = c.model_infer(req).await.unwrap().into_inner();
    let names: Vec<_> = out.outputs.iter().map(|o| o.name.as_str()).collect();
    assert_eq!(names, ["b", "f"]);
}

#[tokio::test]
async fn raw_contents_round_trip() {
    let mut c = client().await;
    let fp16: Vec<u8> = [1.5f32, -2.0]
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    let int64: Vec<u8> = [i64::MIN, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
    let bytes = b"\x02\0\0\0ab\x00\0\0\0".to_vec();
    let mut req = request(
        "identity",
        vec![
            InferInputTensor {
                contents: None,
                ..input("h", "FP16", &[1, 2], Default::default())
            },
            InferInputTensor {
                contents: None,
                ..input("l", "INT64", &[2], Default::default())
            },
            InferInputTensor {
                contents: None,
                ..input("s", "BYTES", &[2], Default::default())
            },
        ],
    );
    req.raw_input_contents = vec![
        fp16.clone().into(),
        int64.clone().into(),
        bytes.clone().into(),
    ];
    let out = c.model_infer(req).await.unwrap().into_inner();
    assert!(out.outputs.iter().all(|o| o.contents.is_none()));
    assert_eq!(out.outputs[0].datatype, "FP16");
    assert_eq!(out.outputs[0].shape, vec![1, 2]);
    assert_eq!(
        out.raw_output_contents,
        vec![Bytes::from(fp16), Bytes::from(int64), Bytes::from(bytes)]
    );
}

#[tokio::test]
async fn bad_inputs_get_invalid_argument() {
    let mut c = client().await;
    let fp32 = |v: Vec<f32>| InferTensorContents {
        fp32_contents: v,
        ..Default::default()
    };
    let cases: Vec<(ModelInferRequest, Code, &str)> = vec![
        (
            request("identity", vec![input("x", "FLOAT", &[1], fp32(vec![1.0]))]),
            Code::InvalidArgument,
            "unknown datatype",
        ),
        (
            request(
                "identity",
                vec![input("x", "FP32", &[2, 3], fp32(vec![1.0; 5]))],
            ),
            Code::InvalidArgument,
            "holds 6 elements but 5",
        ),
        (
            request(
                "identity",
                vec![input("x", "FP32", &[1_000_000, 1_000_000], fp32(vec![1.0]))],
            ),
            Code::ResourceExhausted,
            "over the limit",
        ),
        (
            request("identity", vec![input("x", "FP32", &[-1], fp32(vec![1.0]))]),
            Code::InvalidArgument,
            "negative dimension",
        ),
        (
            request(
                "identity",
                vec![input(
                    "x",
                    "INT8",
                    &[1],
                    InferTensorContents {
                        int_contents: vec![300],
                        ..Default::default()
                    },
                )],
            ),
            Code::InvalidArgument,
            "out of range for INT8",
        ),
        (
            request("identity", vec![input("x", "FP16", &[1], fp32(vec![1.0]))]),
            Code::InvalidArgument,
            "raw_input_contents",
        ),
        (
            request("nope", vec![input("x", "FP32", &[1], fp32(vec![1.0]))]),
            Code::NotFound,
            "unknown model",
        ),
        (
            request("busy", vec![input("x", "FP32", &[1], fp32(vec![1.0]))]),
            Code::ResourceExhausted,
            "full",
        ),
        (
            request("cold", vec![input("x", "FP32", &[1], fp32(vec![1.0]))]),
            Code::Unavailable,
            "not ready",
        ),
    ];
    for (req, code, message) in cases {
        let status = c.model_infer(req).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(
            status.message().contains(message),
            "{:?} lacks {message:?}",
            status.message()
        );
    }
    // Raw contents: a BYTES element longer than its buffer, a count mismatch.
    let mut req = request(
        "identity",
        vec![InferInputTensor {
            contents: None,
            ..input("s", "BYTES", &[1], Default::default())
        }],
    );
    req.raw_input_contents = vec![Bytes::from_static(b"\xff\0\0\0ab")];
    let status = c.model_infer(req.clone()).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("claims 255 bytes"),
        "{}",
        status.message()
    );
    req.raw_input_contents.push(Bytes::new());
    let status = c.model_infer(req).await.unwrap_err();
    assert!(
        status
            .message()
            .contains("2 raw_input_contents for 1 inputs"),
        "{}",
        status.message()
    );
    // Still serving.
    let ok = c
        .model_infer(request(
            "identity",
            vec![input("x", "FP32", &[1], fp32(vec![1.0]))],
        ))
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn message_over_the_limit_is_resource_exhausted() {
    let addr = serve(Limits::default().max_body_bytes(1024)).await;
    let mut c = GrpcInferenceServiceClient::connect(addr).await.unwrap();
    let big = InferTensorContents {
        fp32_contents: vec![0.0; 1024],
        ..Default::default()
    };
    let status = c
        .model_infer(request("identity", vec![input("x", "FP32", &[1024], big)]))
        .await
        .unwrap_err();
    // tonic refuses the message while decoding, before the service runs.
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    assert!(
        status.message().contains("the limit is: 1024 bytes"),
        "{status:?}"
    );
}

#[tokio::test]
async fn grpc_timeout_reaches_the_repository_as_the_deadline() {
    let mut c = client().await;
    let fp32 = InferTensorContents {
        fp32_contents: vec![1.0],
        ..Default::default()
    };
    let mut call = tonic::Request::new(request(
        "deadline",
        vec![input("x", "FP32", &[1], fp32.clone())],
    ));
    call.set_timeout(Duration::from_secs(5));
    let out = c.model_infer(call).await.unwrap().into_inner();
    let left = out.outputs[0].contents.as_ref().unwrap().int64_contents[0];
    assert!((4_000..=5_000).contains(&left), "{left} ms left of 5 s");

    let call = tonic::Request::new(request(
        "deadline",
        vec![input("x", "FP32", &[1], fp32.clone())],
    ));
    let out = c.model_infer(call).await.unwrap().into_inner();
    assert_eq!(
        out.outputs[0].contents.as_ref().unwrap().int64_contents,
        vec![-1]
    );

    // A model slower than the deadline: the call ends at the deadline,
    // with DEADLINE_EXCEEDED from the protocol layer or CANCELLED from
    // tonic's own grpc-timeout timer, whichever fires first.
    let mut call = tonic::Request::new(request("slow", vec![input("x", "FP32", &[1], fp32)]));
    call.set_timeout(Duration::from_millis(100));
    let started = tokio::time::Instant::now();
    let status = c.model_infer(call).await.unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test]
async fn health_and_reflection_are_served() {
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let addr = serve(Limits::default()).await;
    let channel = Channel::from_shared(addr).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel.clone());
    let check = HealthCheckRequest {
        service: "inference.GRPCInferenceService".into(),
    };
    let status = health.check(check).await.unwrap().into_inner().status;
    assert_eq!(
        status,
        tonic_health::pb::health_check_response::ServingStatus::Serving as i32
    );

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel);
    let ask = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection
        .server_reflection_info(tokio_stream::iter(vec![ask]))
        .await
        .unwrap()
        .into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        answers.message().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<_> = list.service.iter().map(|s| s.name.as_str()).collect();
    assert!(
        names.contains(&"inference.GRPCInferenceService"),
        "{names:?}"
    );
    assert!(names.contains(&"grpc.health.v1.Health"), "{names:?}");
}

#[test]
fn default_grpc_service_builds() {
    let _ = grpc_service(common::repo());
}
