//! A generated tonic client whose transport is a balancer over
//! `HttpConnector::grpc` endpoints: KServe v2 gRPC through convoy-remote
//! unchanged (here `grpc.health.v1`, which needs no protoc).

use std::time::Duration;

use convoy_remote::{Endpoint, HttpConnector, Pool, PoolConfig, StaticSource};
use convoy_router::balance::BalanceConfig;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

async fn grpc_server() -> std::net::SocketAddr {
    let (reporter, service) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("convoy.Node", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        // The reporter lives as long as the server.
        let _reporter = reporter;
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tonic::transport::server::TcpIncoming::from(listener))
            .await
            .unwrap();
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tonic_client_calls_through_the_balancer() {
    let (a, b) = (grpc_server().await, grpc_server().await);
    let pool = Pool::new(
        StaticSource::new([Endpoint::ready("a", a, "1"), Endpoint::ready("b", b, "1")]),
        HttpConnector::<tonic::body::Body>::grpc(Duration::from_secs(1)),
        // These servers have no /v2/health/ready: an always-passing probe.
        |_: &Endpoint| async { true },
        PoolConfig::default(),
    )
    .unwrap();
    let balancer = pool
        .balancer::<http::Request<tonic::body::Body>>("1", BalanceConfig::default())
        .unwrap();
    let mut client = HealthClient::new(balancer);
    for _ in 0..10 {
        let rsp = client
            .check(HealthCheckRequest {
                service: "convoy.Node".into(),
            })
            .await
            .unwrap();
        assert_eq!(rsp.into_inner().status(), ServingStatus::Serving);
    }
    // An error status with its message comes back through the trailers.
    let err = client
        .check(HealthCheckRequest {
            service: "unknown".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}
