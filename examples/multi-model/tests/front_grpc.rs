//! KServe v2 gRPC at a front built from its configuration file: calls
//! routed by the model and version their messages name, split by the
//! deployment's weights, the nodes' answers and statuses passed through,
//! the server-level calls answered by the front, bad messages refused,
//! and the `multi-model-front` binary serving it with `--config`. The
//! nodes are in-process KServe v2 gRPC services (identity) on loopback.

mod cluster;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use example_kserve::proto::{
    model_infer_response, InferTensorContents, ModelInferRequest, ModelInferResponse,
    ModelMetadataRequest, ModelMetadataResponse, ModelReadyRequest, ModelReadyResponse,
    ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest, ServerMetadataResponse,
    ServerReadyRequest, ServerReadyResponse,
};
use example_multi_model::remote::{Front, Scalers};
use example_multi_model::Config;
use http_body_util::BodyExt;
use testkit::ServerProcess;
use tonic::transport::server::TcpIncoming;
use tonic::{Request, Response, Status};
use tower::ServiceExt;

const FRONT: &str = env!("CARGO_BIN_EXE_multi-model-front");
const NODE: &str = env!("CARGO_BIN_EXE_multi-model");

/// An identity node's gRPC service; its answers name the node and the
/// version it serves.
struct GrpcNode {
    name: &'static str,
    version: &'static str,
}

#[tonic::async_trait]
impl GrpcInferenceService for GrpcNode {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Err(Status::internal("a node: the front answers this itself"))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Err(Status::internal("a node: the front answers this itself"))
    }

    async fn model_ready(
        &self,
        req: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        Ok(Response::new(ModelReadyResponse {
            ready: req.get_ref().version == self.version,
        }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Err(Status::internal("a node: the front answers this itself"))
    }

    async fn model_metadata(
        &self,
        req: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        Ok(Response::new(ModelMetadataResponse {
            name: req.into_inner().name,
            versions: vec![self.version.to_string()],
            platform: self.name.to_string(),
            ..Default::default()
        }))
    }

    async fn model_infer(
        &self,
        req: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let req = req.into_inner();
        if req.inputs.is_empty() {
            let mut status = Status::failed_precondition(format!("node {}: no inputs", self.name));
            status
                .metadata_mut()
                .insert("x-node", self.name.parse().unwrap());
            return Err(status);
        }
        Ok(Response::new(ModelInferResponse {
            model_name: req.model_name,
            model_version: self.version.to_string(),
            id: self.name.to_string(),
            outputs: req
                .inputs
                .into_iter()
                .map(|i| model_infer_response::InferOutputTensor {
                    name: i.name,
                    datatype: i.datatype,
                    shape: i.shape,
                    contents: i.contents,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        }))
    }
}

async fn grpc_node(name: &'static str, version: &'static str) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(GrpcInferenceServiceServer::new(GrpcNode { name, version }))
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    addr
}

/// The node's HTTP side, which the front's REST pool (and the versions'
/// readiness) follows.
async fn http_node() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(|| async { "ok" });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

/// Two versions of `identity` (75/25), one node each, and `other` beside.
async fn two_versions() -> String {
    let (ha, hb, hc) = (http_node().await, http_node().await, http_node().await);
    let (ga, gb, gc) = (
        grpc_node("a", "1").await,
        grpc_node("b", "2").await,
        grpc_node("c", "1").await,
    );
    identity_75_25(&format!(
        r#"static = {{ "1" = ["a={ha}"], "2" = ["b={hb}"] }}
grpc = {{ "1" = ["a={ga}"], "2" = ["b={gb}"] }}"#
    )) + &format!(
        r#"
[[deployment]]
name = "other"

[deployment.remote]
static = {{ "1" = ["c={hc}"] }}
grpc = {{ "1" = ["c={gc}"] }}
"#
    )
}

/// A front serving gRPC, deployment `identity` with versions 1 and 2
/// weighted 75/25 over the nodes `remote` names.
fn identity_75_25(remote: &str) -> String {
    format!(
        r#"
[server]
grpc_addr = "127.0.0.1:0"

[[deployment]]
name = "identity"
version = [{{ name = "1", weight = 75 }}, {{ name = "2", weight = 25 }}]

[deployment.remote]
{remote}
"#
    )
}

type Client = GrpcInferenceServiceClient<tonic::transport::Channel>;

fn infer(model: &str, version: &str, data: Vec<f32>) -> ModelInferRequest {
    ModelInferRequest {
        model_name: model.into(),
        model_version: version.into(),
        inputs: vec![
            example_kserve::proto::model_infer_request::InferInputTensor {
                name: "x".into(),
                datatype: "FP32".into(),
                shape: vec![1, data.len() as i64],
                contents: Some(InferTensorContents {
                    fp32_contents: data,
                    ..Default::default()
                }),
                ..Default::default()
            },
        ],
        ..Default::default()
    }
}

/// One call, bounded: (node, version, `x-convoy-version`) of the answer.
async fn call(
    client: &mut Client,
    req: ModelInferRequest,
) -> Result<(String, String, String), Status> {
    let data = req.inputs[0]
        .contents
        .as_ref()
        .map(|c| c.fp32_contents.clone())
        .unwrap_or_default();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.model_infer(req))
        .await
        .expect("an answer within 10 s")?;
    let header = rsp
        .metadata()
        .get("x-convoy-version")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let rsp = rsp.into_inner();
    // Typed contents, or raw little-endian bytes (what a real node answers).
    let out: Vec<f32> = match rsp.raw_output_contents.first() {
        Some(raw) => raw
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        None => rsp.outputs[0]
            .contents
            .as_ref()
            .map(|c| c.fp32_contents.clone())
            .unwrap_or_default(),
    };
    assert_eq!(out, data, "identity");
    Ok((rsp.id, rsp.model_version, header))
}

async fn front_of(text: &str) -> (Front, Client) {
    let config = Config::parse(text).unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let router = front.grpc_router().expect("the front serves gRPC");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await });
    let client = Client::connect(format!("http://{addr}")).await.unwrap();
    (front, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_front_forwards_grpc_by_model_split_and_pinned_version() {
    let (_front, mut client) = front_of(&two_versions().await).await;

    // Smooth weighted round robin over the split's weights: 75/25 exactly
    // over 40 calls, each answered by its version's node.
    let mut by_version = BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let (node, version, header) =
            call(&mut client, infer("identity", "", vec![i as f32, -2.0]))
                .await
                .unwrap();
        assert_eq!(node, if version == "1" { "a" } else { "b" });
        assert_eq!(header, version, "the answer names its version");
        *by_version.entry(version).or_default() += 1;
    }
    assert_eq!(by_version["1"], 30, "{by_version:?}");
    assert_eq!(by_version["2"], 10, "{by_version:?}");

    // The message's model_version pins the version.
    for _ in 0..5 {
        let (node, version, _) = call(&mut client, infer("identity", "2", vec![1.0]))
            .await
            .unwrap();
        assert_eq!((node.as_str(), version.as_str()), ("b", "2"));
        let (node, _, _) = call(&mut client, infer("identity", "1", vec![1.0]))
            .await
            .unwrap();
        assert_eq!(node, "a");
    }
    // Another deployment by its name.
    let (node, _, _) = call(&mut client, infer("other", "", vec![3.0]))
        .await
        .unwrap();
    assert_eq!(node, "c");

    // An unknown model or version: NOT_FOUND from the front.
    let err = call(&mut client, infer("nope", "", vec![1.0]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("no model \"nope\""), "{err}");
    let err = call(&mut client, infer("identity", "9", vec![1.0]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("no version \"9\""), "{err}");

    // A node's error comes through unchanged: code, message, metadata.
    let mut empty = infer("identity", "2", vec![]);
    empty.inputs.clear();
    let err = client.model_infer(empty).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(err.message(), "node b: no inputs");
    assert_eq!(err.metadata().get("x-node").unwrap(), "b");

    // ModelReady and ModelMetadata go to the version's node.
    for (version, node) in [("1", "a"), ("2", "b")] {
        let ready = client
            .model_ready(ModelReadyRequest {
                name: "identity".into(),
                version: version.into(),
            })
            .await
            .unwrap();
        assert!(ready.into_inner().ready, "version {version}");
        let metadata = client
            .model_metadata(ModelMetadataRequest {
                name: "identity".into(),
                version: version.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(metadata.name, "identity");
        assert_eq!(
            (metadata.platform.as_str(), metadata.versions),
            (node, vec![version.to_string()])
        );
    }
    let err = client
        .model_metadata(ModelMetadataRequest {
            name: "nope".into(),
            version: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");

    // The server-level calls: the front's own answers (the nodes refuse).
    let live = client.server_live(ServerLiveRequest {}).await.unwrap();
    let ready = client.server_ready(ServerReadyRequest {}).await.unwrap();
    assert!(live.into_inner().live && ready.into_inner().ready);
    let metadata = client.server_metadata(ServerMetadataRequest {}).await;
    let metadata = metadata.unwrap().into_inner();
    assert_eq!(metadata.name, "multi-model-front");
    assert!(!metadata.version.is_empty());
}

/// A raw call to the front's gRPC router: its `grpc-status` and message.
async fn raw(front: &Front, method: &str, body: Vec<u8>) -> (String, String) {
    let req = http::Request::post(format!("/inference.GRPCInferenceService/{method}"))
        .header("content-type", "application/grpc")
        .body(axum::body::Body::from(body))
        .unwrap();
    let rsp = front.grpc_router().unwrap().oneshot(req).await.unwrap();
    let get = |name: &str| {
        rsp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default()
    };
    let (status, message) = (get("grpc-status"), get("grpc-message"));
    // A refusal is trailers-only: no message follows.
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(body.is_empty(), "{body:?}");
    (status, message)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_or_unroutable_grpc_messages_are_refused_by_the_front() {
    let (front, _client) = front_of(&two_versions().await).await;
    let frame = |msg: &[u8]| {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    };
    let invalid = (tonic::Code::InvalidArgument as i32).to_string();
    // Field 1 says 100 bytes, 1 follows.
    let (status, message) = raw(&front, "ModelInfer", frame(&[0x0a, 100, b'i'])).await;
    assert_eq!(status, invalid, "{message}");
    assert!(message.contains("malformed"), "{message}");
    // A frame whose length is not the body's, and no frame at all.
    let (status, _) = raw(&front, "ModelReady", vec![0, 0, 0, 0, 9, 0x0a]).await;
    assert_eq!(status, invalid);
    let (status, _) = raw(&front, "ModelMetadata", Vec::new()).await;
    assert_eq!(status, invalid);
    // Well formed but naming no model.
    let (status, message) = raw(&front, "ModelInfer", frame(&[0x12, 1, b'1'])).await;
    assert_eq!(status, invalid);
    assert!(message.contains("model name"), "{message}");
    // Compressed (the front cannot read it) and an unknown method.
    let unimplemented = (tonic::Code::Unimplemented as i32).to_string();
    assert_eq!(
        raw(&front, "ModelInfer", vec![1, 0, 0, 0, 0]).await.0,
        unimplemented
    );
    assert_eq!(
        raw(&front, "ModelStreamInfer", frame(&[])).await.0,
        unimplemented
    );
}

/// A version without a ready node: the call waits in the version's
/// cold-start queue for `ready_timeout`, then `UNAVAILABLE`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grpc_call_to_a_version_without_a_node_waits_then_is_unavailable() {
    let text = "[server]\ngrpc_addr = \"127.0.0.1:0\"\n[[deployment]]\nname = \"m\"\n[deployment.remote]\nstatic = { \"1\" = [] }\ngrpc = { \"1\" = [] }\nready_timeout = \"300ms\"\ncold_start_timeout = \"1h\"\n";
    let (_front, mut client) = front_of(text).await;
    let sent = tokio::time::Instant::now();
    let err = call(&mut client, infer("m", "", vec![1.0]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.message()
            .contains("none of version 1 became ready within"),
        "{err}"
    );
    assert!(sent.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn a_grpc_front_needs_grpc_nodes_named_by_their_field() {
    let base = "[[deployment]]\nname = \"m\"\n[deployment.remote]\nstatic = { \"1\" = [\"127.0.0.1:9\"] }\n";
    // Serving gRPC, the static source must list the gRPC nodes.
    let config = Config::parse(&format!("[server]\ngrpc_addr = \"127.0.0.1:0\"\n{base}")).unwrap();
    let err = Front::from_config(&config, Scalers::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remote.grpc"), "{err}");
    // Without grpc_addr the front serves REST only.
    let front = Front::from_config(&Config::parse(base).unwrap(), Scalers::new())
        .await
        .unwrap();
    assert!(front.grpc_router().is_none());
    // A version the deployment lacks, a bad address, and etcd with a list.
    for (extra, field) in [
        ("grpc = { \"2\" = [\"127.0.0.1:9\"] }\n", "remote.grpc"),
        ("grpc = { \"1\" = [\"nowhere\"] }\n", "grpc.1"),
    ] {
        let err = Config::parse(&format!("{base}{extra}")).unwrap_err();
        assert!(err.to_string().contains(field), "{err}");
    }
    let err = Config::parse(
        "[[deployment]]\nname = \"m\"\n[deployment.remote]\netcd = { url = \"http://127.0.0.1:1\" }\ngrpc = { \"1\" = [\"127.0.0.1:9\"] }\n",
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .contains("grpc: only with the static source"),
        "{err}"
    );
}

/// The binary: `--config` with `--grpc-addr` serves the configuration's
/// deployments over gRPC.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_front_binary_serves_grpc_from_its_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("front.toml");
    let text = two_versions()
        .await
        .replace("grpc_addr = \"127.0.0.1:0\"", "");
    std::fs::write(&path, text).unwrap();
    let front = ServerProcess::command(FRONT)
        .args(["--config", path.to_str().unwrap()])
        .args(["--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .start()
        .unwrap_or_else(|e| panic!("front: {e}"));
    let grpc = front.grpc().expect("the front serves gRPC").to_string();
    let mut client = Client::connect(grpc).await.unwrap();
    let (node, version, _) = call(&mut client, infer("identity", "2", vec![1.0, 2.0]))
        .await
        .unwrap();
    assert_eq!((node.as_str(), version.as_str()), ("b", "2"));
    front.terminate();
}

/// Real node processes registered in etcd, one per version, each with its
/// gRPC address: the front finds the gRPC services the nodes registered
/// and splits unpinned calls by the weights.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_front_over_etcd_forwards_grpc_to_the_nodes_registered_addresses() {
    let etcd = cluster::Etcd::start();
    let dir = tempfile::tempdir().unwrap();
    let node_config = dir.path().join("node.toml");
    std::fs::write(&node_config, cluster::NODE_CONFIG).unwrap();
    let nodes: Vec<ServerProcess> = ["1", "2"]
        .into_iter()
        .map(|version| {
            ServerProcess::command(NODE)
                .arg("--config")
                .arg(&node_config)
                .args(["--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
                .args(["--etcd", &etcd.url(), "--node-id", &format!("n{version}")])
                .args(["--node-version", version])
                .start_timeout(Duration::from_secs(60))
                .start()
                .unwrap_or_else(|e| panic!("node {version}: {e}"))
        })
        .collect();
    let text = identity_75_25(&format!(
        "etcd = {{ url = \"{}\" }}\nready_timeout = \"10s\"",
        etcd.url()
    ));
    let (front, mut client) = front_of(&text).await;
    // Unpinned: 30/10 over 40 calls, each answered by its version's node.
    let mut by_version = BTreeMap::<String, usize>::new();
    for i in 0..40 {
        let (_, _, header) = call(&mut client, infer("identity", "", vec![i as f32, 0.5]))
            .await
            .unwrap();
        *by_version.entry(header).or_default() += 1;
    }
    assert_eq!(by_version.get("1"), Some(&30), "{by_version:?}");
    assert_eq!(by_version.get("2"), Some(&10), "{by_version:?}");
    // The gRPC endpoints came from the nodes' registrations.
    let mut grpc: Vec<_> = front
        .grpc_endpoints()
        .into_iter()
        .map(|s| (s.endpoint.id, s.endpoint.version, s.serving))
        .collect();
    grpc.sort();
    assert_eq!(
        grpc,
        [
            ("n1/grpc".to_string(), "1/grpc".to_string(), true),
            ("n2/grpc".to_string(), "2/grpc".to_string(), true)
        ]
    );
    // A real node's own status through the front: a shape its data
    // does not fill.
    let mut bad = infer("identity", "1", vec![1.0]);
    bad.inputs[0].shape = vec![1, 5];
    let err = client.model_infer(bad).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");
    for node in nodes {
        node.terminate();
    }
}
