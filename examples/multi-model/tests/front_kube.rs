//! The front's Kubernetes wiring (feature `kubernetes`): a
//! `[deployment.remote.kubernetes]` configuration through the front as
//! built from its TOML, against a small fake API server on loopback (the
//! kubeconfig in `KUBECONFIG` points at it): the version's nodes are the
//! Ready endpoints of its Service's EndpointSlices, the front forwards to
//! them, and the autoscale entry's `KubeScaler` reads the node
//! Deployment's scale subresource and runs the Lease election. convoy-kube's
//! own tests cover each piece against recorded answers and a fake cluster;
//! this checks that the front puts them together.
//!
//! Run with `cargo test -p example-multi-model --features kubernetes --test
//! front_kube` (`make test-examples` does).
#![cfg(feature = "kubernetes")]

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use example_multi_model::remote::{Front, Scalers};
use example_multi_model::Config;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::Instant;

mod cluster;

/// Every call the fake API server saw: "METHOD path".
type Seen = Arc<Mutex<Vec<String>>>;

/// The fake API server: one EndpointSlice of Service `convoy-node` with
/// one Ready pod at `node` (its port `grpc`: `grpc_port`), a watch that
/// stays quiet, the node Deployment's scale, and Leases created on request.
async fn api(
    State((seen, node, grpc_port)): State<(Seen, std::net::SocketAddr, u16)>,
    req: Request,
) -> Response {
    let (method, path) = (req.method().clone(), req.uri().path().to_string());
    let query = req.uri().query().unwrap_or_default().to_string();
    seen.lock().push(format!("{method} {path}"));
    let json = |status: u16, v: serde_json::Value| {
        (
            axum::http::StatusCode::from_u16(status).unwrap(),
            [("content-type", "application/json")],
            v.to_string(),
        )
            .into_response()
    };
    match (method.as_str(), path.as_str()) {
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/convoy/endpointslices")
            if query.contains("watch=true") || query.contains("watch=1") =>
        {
            // A watch with nothing to say (until the test ends).
            Response::new(Body::from_stream(futures::stream::pending::<
                Result<Bytes, std::io::Error>,
            >()))
        }
        ("GET", "/apis/discovery.k8s.io/v1/namespaces/convoy/endpointslices") => json(
            200,
            json!({
                "apiVersion": "discovery.k8s.io/v1",
                "kind": "EndpointSliceList",
                "metadata": {"resourceVersion": "10"},
                "items": [{
                    "apiVersion": "discovery.k8s.io/v1",
                    "kind": "EndpointSlice",
                    "metadata": {
                        "name": "convoy-node-x1",
                        "namespace": "convoy",
                        "resourceVersion": "10",
                        "labels": {"kubernetes.io/service-name": "convoy-node"}
                    },
                    "addressType": "IPv4",
                    "ports": [
                        {"name": "http", "port": node.port(), "protocol": "TCP"},
                        {"name": "grpc", "port": grpc_port, "protocol": "TCP"}
                    ],
                    "endpoints": [{
                        "addresses": [node.ip().to_string()],
                        "conditions": {"ready": true, "serving": true, "terminating": false},
                        "targetRef": {"kind": "Pod", "name": "pod-a", "namespace": "convoy"}
                    }]
                }]
            }),
        ),
        ("GET", "/apis/apps/v1/namespaces/convoy/deployments/convoy-node/scale") => json(
            200,
            json!({
                "apiVersion": "autoscaling/v1",
                "kind": "Scale",
                "metadata": {"name": "convoy-node", "namespace": "convoy", "resourceVersion": "7"},
                "spec": {"replicas": 1},
                "status": {"replicas": 1, "selector": "app.kubernetes.io/name=convoy-node"}
            }),
        ),
        ("POST", "/apis/coordination.k8s.io/v1/namespaces/convoy/leases") => {
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let mut lease: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
            lease["metadata"]["resourceVersion"] = json!("1");
            json(201, lease)
        }
        _ => json(
            404,
            json!({
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": format!("{path} not found")
            }),
        ),
    }
}

async fn serve(app: axum::Router) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

async fn get(url: String) -> (u16, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let rsp = tokio::time::timeout(Duration::from_secs(10), client.get(url.parse().unwrap()))
        .await
        .expect("an answer within 10 s")
        .expect("an answer");
    let status = rsp.status().as_u16();
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_reads_its_nodes_from_endpoint_slices_and_scales_through_the_api() {
    let node = serve(axum::Router::new().fallback(|| async { "pod-a answers" })).await;
    let grpc = serve(axum::Router::new()).await;
    let seen: Seen = Arc::default();
    let api_addr = serve(axum::Router::new().fallback(api).with_state((
        seen.clone(),
        node,
        grpc.port(),
    )))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster::fake_kubeconfig(dir.path(), api_addr, "convoy");
    // The only test of this binary: nothing else reads the environment.
    std::env::set_var("KUBECONFIG", &kubeconfig);
    std::env::set_var("POD_NAME", "front-0");
    let config = Config::parse(
        r#"
[server]
grpc_addr = "127.0.0.1:0"

[[deployment]]
name = "identity"

[deployment.remote]
kubernetes = { namespace = "convoy", port = "http", grpc_port = "grpc", services = { "1" = "convoy-node" } }

[[deployment.remote.autoscale]]
version = "1"
min = 1
max = 2
interval = "200ms"
kubernetes = { deployment = "convoy-node", lease = "convoy-node-autoscaler" }
"#,
    )
    .unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let base = format!("http://{}", serve(front.clone().router()).await);

    // The pod of the slice serves.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !front.endpoints().iter().any(|e| e.serving) {
        assert!(Instant::now() < deadline, "no endpoint from the slices");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, body) = get(format!("{base}/v1/models/identity/infer")).await;
    assert_eq!((status, body.as_str()), (200, "pod-a answers"));
    let (_, list) = get(format!("{base}/front/endpoints")).await;
    assert!(list.contains("\"id\":\"pod-a\""), "{list}");
    // Its gRPC service: the same pod on the slice's port named grpc.
    let deadline = Instant::now() + Duration::from_secs(10);
    let grpc_endpoint = loop {
        let found = front.grpc_endpoints().into_iter().find(|e| e.serving);
        if let Some(e) = found {
            break e.endpoint;
        }
        assert!(
            Instant::now() < deadline,
            "no gRPC endpoint from the slices"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(
        (grpc_endpoint.addr, grpc_endpoint.version.as_str()),
        (grpc, "1/grpc")
    );
    assert!(front.grpc_router().is_some());
    // Serving gRPC without naming the Services' gRPC port: refused.
    let text = r#"
[server]
grpc_addr = "127.0.0.1:0"

[[deployment]]
name = "m"

[deployment.remote]
kubernetes = { namespace = "convoy", services = { "1" = "convoy-node" } }
"#;
    let err = Front::from_config(&Config::parse(text).unwrap(), Scalers::new())
        .await
        .unwrap_err();
    assert!(
        err.to_string().contains("remote.kubernetes.grpc_port"),
        "{err}"
    );

    // The scaler read the node Deployment's scale, the elector took the
    // Lease, the source listed and watched the slices.
    let wanted = [
        "GET /apis/discovery.k8s.io/v1/namespaces/convoy/endpointslices",
        "GET /apis/apps/v1/namespaces/convoy/deployments/convoy-node/scale",
        "GET /apis/coordination.k8s.io/v1/namespaces/convoy/leases/convoy-node-autoscaler",
        "POST /apis/coordination.k8s.io/v1/namespaces/convoy/leases",
    ];
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let calls = seen.lock().clone();
        if wanted.iter().all(|w| calls.iter().any(|c| c == w)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "calls seen: {calls:?}, wanted all of {wanted:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    front.shutdown();
}
