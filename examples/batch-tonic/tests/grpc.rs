//! The gRPC service over a real loopback HTTP/2 connection, and its
//! deadline path driven directly.

use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::BatchConfig;
use example_batch_axum::Mlp;
use example_batch_tonic::{proto::InferRequest, MlpClient, MlpService, INFER_PATH};
use tonic::transport::server::TcpIncoming;
use tonic::Code;

fn model() -> Arc<Mlp> {
    Arc::new(Mlp::seeded(&[8, 16, 4], 3).unwrap())
}

fn config() -> BatchConfig {
    BatchConfig::builder().max_batch_size(8).build().unwrap()
}

async fn serve(svc: MlpService) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    format!("http://{addr}")
}

fn input(k: f32) -> Vec<f32> {
    (0..8).map(|i| (i as f32 - 3.5) * k / 4.0).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_calls_get_their_own_answers() {
    let model = model();
    let svc = MlpService::new(Arc::clone(&model), config());
    let stats = svc.handle();
    let client = MlpClient::connect(serve(svc).await).await.unwrap();
    let calls: Vec<_> = (0..32)
        .map(|i| {
            let mut client = client.clone();
            tokio::spawn(async move {
                let x = input(i as f32);
                let out = client
                    .infer(x.clone(), Some(Duration::from_secs(30)))
                    .await
                    .unwrap();
                (x, out)
            })
        })
        .collect();
    for call in calls {
        let (x, got) = call.await.unwrap();
        let want = model.infer_one(x).unwrap();
        assert_eq!(got.len(), 4);
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
    let stats = stats.stats();
    assert_eq!(stats.completed_total, 32);
    assert!(
        stats.batches_total >= 4 && stats.batches_total <= 32,
        "{stats:?}"
    );
}

#[tokio::test]
async fn wrong_width_is_invalid_argument() {
    let mut client = MlpClient::connect(serve(MlpService::new(model(), config())).await)
        .await
        .unwrap();
    let status = client.infer(vec![1.0; 3], None).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("exactly 8"),
        "{}",
        status.message()
    );
}

#[tokio::test]
async fn closed_batcher_is_unavailable() {
    let svc = MlpService::new(model(), config());
    svc.handle().close();
    let mut client = MlpClient::connect(serve(svc).await).await.unwrap();
    let status = client.infer(input(1.0), None).await.unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
}

#[tokio::test]
async fn unknown_method_is_unimplemented() {
    use tower::ServiceExt;
    let svc = MlpService::new(model(), config());
    let req = http::Request::post("/convoy.examples.Mlp/Nope")
        .header("content-type", "application/grpc")
        .body(tonic::body::Body::empty())
        .unwrap();
    let resp = svc.oneshot(req).await.unwrap();
    assert_eq!(resp.headers()["grpc-status"], "12");
    assert_ne!(INFER_PATH, "/convoy.examples.Mlp/Nope");
}

#[tokio::test(start_paused = true)]
async fn an_expired_grpc_timeout_never_reaches_the_model() {
    let svc = MlpService::new(model(), config());
    let mut request = tonic::Request::new(InferRequest { inputs: input(1.0) });
    request
        .metadata_mut()
        .insert("grpc-timeout", "0m".parse().unwrap());
    let status = svc.infer(request).await.unwrap_err();
    assert_eq!(status.code(), Code::DeadlineExceeded);
    let stats = svc.handle().stats();
    assert_eq!(stats.batches_total, 0);
    assert_eq!(stats.rejected.deadline_exceeded, 1);

    // A generous timeout goes through.
    let mut request = tonic::Request::new(InferRequest { inputs: input(1.0) });
    request
        .metadata_mut()
        .insert("grpc-timeout", "10S".parse().unwrap());
    assert_eq!(
        svc.infer(request).await.unwrap().into_inner().outputs.len(),
        4
    );
}
