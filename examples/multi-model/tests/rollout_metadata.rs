//! A rollout in the KServe v2 model metadata: both versions in `versions`
//! (REST and gRPC) while it runs, and over REST its state, step and canary
//! share as `parameters.rollout`, the same figures `/v1/models` shows.
//! Identity models and a configured rollout: no registry needed.

mod common;

use common::{fp32_row, start};
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::ModelMetadataRequest;
use hyper::StatusCode;
use serde_json::{json, Value};

/// Two identity versions and a rollout from 1 to 2 in two steps: 5
/// canary answers and 20 ms per step make a verdict, so the rollout waits
/// at its first step until traffic comes.
const ROLLOUT: &str = r#"
[server]
request_timeout = "10s"

[[deployment]]
name = "identity"
model = "identity"

[[deployment.version]]
name = "1"

[[deployment.version]]
name = "2"

[deployment.rollout]
steps = [50, 100]
step = "20ms"
min_samples = 5
max_p99 = "30s"

[deployment.device]
kind = "cpu"
"#;

async fn grpc_versions(addr: std::net::SocketAddr) -> Vec<String> {
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    client
        .model_metadata(ModelMetadataRequest {
            name: "identity".into(),
            version: String::new(),
        })
        .await
        .unwrap()
        .into_inner()
        .versions
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_v2_metadata_shows_a_configured_rollout_from_start_to_promotion() {
    let s = start(ROLLOUT).await;
    let grpc = s.serve_grpc().await;

    // No traffic yet: the rollout holds its first step.
    let meta = s.get("/v2/models/identity").await;
    assert_eq!(meta.status, StatusCode::OK);
    let meta = meta.json();
    assert_eq!(meta["versions"], json!(["1", "2"]));
    let rollout = &meta["parameters"]["rollout"];
    assert_eq!(rollout["state"], "progressing", "{meta:#}");
    assert_eq!(rollout["stable"], "1");
    assert_eq!(rollout["canary"], "2");
    assert_eq!(rollout["step"], 0);
    assert_eq!(rollout["steps"], 2);
    assert_eq!(rollout["canary_percent"], 50.0);
    let v1 = &s.models().await["models"][0]["rollout"];
    for field in [
        "stable",
        "canary",
        "state",
        "step",
        "steps",
        "canary_percent",
    ] {
        assert_eq!(rollout[field], v1[field], "{field}");
    }
    assert_eq!(grpc_versions(grpc.addr).await, ["1", "2"]);

    // Traffic: the canary passes both steps and is promoted.
    s.until(|| async {
        for _ in 0..4 {
            let r = s.post("/v1/models/identity/infer", fp32_row(&[1.0])).await;
            assert_eq!(r.status, StatusCode::OK);
        }
        let meta = s.get("/v2/models/identity").await.json();
        meta["parameters"]["rollout"]["state"] == "promoted"
    })
    .await;
    let meta: Value = s.get("/v2/models/identity/versions/2").await.json();
    let rollout = &meta["parameters"]["rollout"];
    assert_eq!(rollout["canary_percent"], 100.0, "{meta:#}");
    assert_eq!(rollout["step"], Value::Null);
    assert!(
        rollout["last_reason"]
            .as_str()
            .unwrap()
            .contains("every step"),
        "{meta:#}"
    );
    // A configured rollout keeps the old version deployed (at weight 0,
    // reachable by version), so both stay listed.
    assert_eq!(meta["versions"], json!(["1", "2"]));
    assert_eq!(grpc_versions(grpc.addr).await, ["1", "2"]);

    grpc.shutdown().await;
    s.shutdown().await;
}
