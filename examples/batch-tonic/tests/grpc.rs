//! The gRPC service over a real loopback HTTP/2 connection with the
//! generated client.

use std::sync::Arc;
use std::time::Duration;

use convoy_batcher::BatchConfig;
use example_batch_tonic::{MlpClient, MlpService, INFER_PATH};
use example_mlp::Mlp;
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
            .add_service(svc.into_server())
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
    let addr = serve(MlpService::new(model(), config())).await;
    let channel = tonic::transport::Channel::from_shared(addr)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    let call = |path: &'static str| {
        let mut grpc = grpc.clone();
        async move {
            grpc.ready().await.unwrap();
            let codec = tonic_prost::ProstCodec::<
                example_batch_tonic::proto::InferRequest,
                example_batch_tonic::proto::InferResponse,
            >::default();
            let request = tonic::Request::new(example_batch_tonic::proto::InferRequest {
                inputs: input(1.0),
            });
            grpc.unary(request, http::uri::PathAndQuery::from_static(path), codec)
                .await
        }
    };
    let status = call("/convoy.examples.Mlp/Nope").await.unwrap_err();
    assert_eq!(status.code(), Code::Unimplemented);
    // The same call on the real path is answered.
    assert_eq!(
        call(INFER_PATH).await.unwrap().into_inner().outputs.len(),
        4
    );
    grpc.ready().await.unwrap();
}

#[tokio::test]
async fn an_expired_grpc_timeout_never_reaches_the_model() {
    let svc = MlpService::new(model(), config());
    let handle = svc.handle();
    let mut client = MlpClient::connect(serve(svc).await).await.unwrap();
    // grpc-timeout travels in the call's headers through the transport: the
    // batcher refuses the expired item (DEADLINE_EXCEEDED), unless tonic's
    // own grpc-timeout timer answers first (CANCELLED). Either way the
    // model never runs.
    let status = client
        .infer(input(1.0), Some(Duration::ZERO))
        .await
        .unwrap_err();
    assert!(
        matches!(status.code(), Code::DeadlineExceeded | Code::Cancelled),
        "{status:?}"
    );
    assert_eq!(handle.stats().batches_total, 0);

    // A generous timeout goes through.
    let out = client
        .infer(input(1.0), Some(Duration::from_secs(10)))
        .await
        .unwrap();
    assert_eq!(out.len(), 4);
    assert_eq!(handle.stats().batches_total, 1);
}
