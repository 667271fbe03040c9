//! The front alone (no root needed): answers without a ready node, its
//! endpoint list, and forwarding to a node on loopback.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use testkit::ServerProcess;
use tokio::time::Instant;

const NODE: &str = env!("CARGO_BIN_EXE_multi-model");
const FRONT: &str = env!("CARGO_BIN_EXE_multi-model-front");

async fn send(
    client: &Client<HttpConnector, Full<Bytes>>,
    method: hyper::Method,
    uri: String,
    body: &str,
) -> (hyper::StatusCode, hyper::HeaderMap, Bytes) {
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.request(req))
        .await
        .expect("an answer within 10 s")
        .expect("the front answers");
    let (parts, body) = rsp.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

async fn get(
    client: &Client<HttpConnector, Full<Bytes>>,
    uri: String,
) -> (hyper::StatusCode, hyper::HeaderMap, Bytes) {
    send(client, hyper::Method::GET, uri, "").await
}

/// A node on loopback with the test configuration and `extra` arguments
/// (its configuration's folder goes with it).
fn start_node(extra: &[&str]) -> (tempfile::TempDir, ServerProcess) {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.toml");
    std::fs::write(&config, include_str!("../config/test.toml")).unwrap();
    let node = ServerProcess::command(NODE)
        .args(["--config"])
        .arg(&config)
        .args(["--addr", "127.0.0.1:0"])
        .args(extra)
        .start()
        .unwrap_or_else(|e| panic!("node: {e}"));
    (dir, node)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_ready_node_the_front_answers_503_with_retry_after() {
    // Port 1 on loopback refuses: the node never becomes ready.
    let front = ServerProcess::command(FRONT)
        .args(["--addr", "127.0.0.1:0", "--node", "gone=127.0.0.1:1"])
        .start()
        .unwrap_or_else(|e| panic!("front: {e}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let infer = format!("{}/v1/models/identity/infer", front.base());
    let body = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,1],"data":[1]}]}"#;
    // Refused before anything is written: retried, then ejected; from then
    // on no node is ready within the front's wait.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let (status, headers, text) = send(&client, hyper::Method::POST, infer.clone(), body).await;
        assert_ne!(status, hyper::StatusCode::OK);
        if status == hyper::StatusCode::SERVICE_UNAVAILABLE {
            assert_eq!(headers["retry-after"], "1");
            assert!(text.starts_with(b"no ready node"), "{text:?}");
            break;
        }
        assert_eq!(status, hyper::StatusCode::BAD_GATEWAY, "{text:?}");
        assert!(Instant::now() < deadline, "never 503");
    }
    let (status, _, text) = get(&client, format!("{}/front/endpoints", front.base())).await;
    assert_eq!(status, hyper::StatusCode::OK);
    let list: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(list[0]["id"], "gone");
    assert_eq!(list[0]["ejected"], true);
    front.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_forwards_to_a_node_and_the_node_counts_requests_in_flight() {
    let (_dir, node) = start_node(&[]);
    let node_addr = node.base().trim_start_matches("http://").to_string();
    let front = ServerProcess::command(FRONT)
        .args(["--addr", "127.0.0.1:0", "--node", &format!("n={node_addr}")])
        .start()
        .unwrap_or_else(|e| panic!("front: {e}"));
    let client = Client::builder(TokioExecutor::new()).build_http();
    let body = r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[1,2],"data":[1.5,-2]}]}"#;
    let (status, _, text) = send(
        &client,
        hyper::Method::POST,
        format!("{}/v1/models/identity/infer", front.base()),
        body,
    )
    .await;
    assert_eq!(status, hyper::StatusCode::OK, "{text:?}");
    let out: serde_json::Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(out["outputs"][0]["data"], serde_json::json!([1.5, -2.0]));
    // A bad request is the node's answer, passed through.
    let (status, _, _) = send(
        &client,
        hyper::Method::POST,
        format!("{}/v1/models/nope/infer", front.base()),
        body,
    )
    .await;
    assert_eq!(status, hyper::StatusCode::NOT_FOUND);
    // The node's in-flight gauge is on its /metrics (back to 0 when idle).
    let (_, _, metrics) = get(&client, format!("{}/metrics", node.base())).await;
    let metrics = String::from_utf8_lossy(&metrics);
    let line = metrics
        .lines()
        .find(|l| l.starts_with("convoy_node_in_flight_requests"))
        .unwrap_or_else(|| panic!("no in-flight gauge in:\n{metrics}"));
    // The /metrics request itself is in flight while it is rendered.
    assert!(line.ends_with(" 1") || line.ends_with(" 0"), "{line}");
    front.terminate();
    node.terminate();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_forwards_kserve_v2_grpc_calls() {
    use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
    use example_kserve::proto::{ModelMetadataRequest, ServerLiveRequest};

    let (_dir, node) = start_node(&["--grpc-addr", "127.0.0.1:0"]);
    let http = node.base().trim_start_matches("http://").to_string();
    let grpc = node.grpc().expect("the node serves gRPC");
    let grpc = grpc.trim_start_matches("http://").to_string();
    let front = ServerProcess::command(FRONT)
        .args(["--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .args([
            "--node",
            &format!("n={http}"),
            "--grpc-node",
            &format!("n={grpc}"),
        ])
        .start()
        .unwrap_or_else(|e| panic!("front: {e}"));
    let front_grpc = front.grpc().expect("the front serves gRPC");
    let front_grpc = front_grpc.trim_start_matches("http://");
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{front_grpc}"))
        .await
        .unwrap();
    assert!(
        client
            .server_live(ServerLiveRequest {})
            .await
            .unwrap()
            .into_inner()
            .live
    );
    let metadata = |name: &str| {
        let mut client = client.clone();
        let request = ModelMetadataRequest {
            name: name.into(),
            version: String::new(),
        };
        async move { client.model_metadata(request).await }
    };
    assert_eq!(
        metadata("identity").await.unwrap().into_inner().name,
        "identity"
    );
    // The node's error status comes through the front unchanged.
    let err = metadata("nope").await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    front.terminate();
    node.terminate();
}
