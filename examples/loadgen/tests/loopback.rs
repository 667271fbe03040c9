//! The load generator against a real loopback server.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::{http::StatusCode, routing::post, Router};
use loadgen::{random_inputs_body, run, LoadConfig};

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    format!("http://{addr}")
}

#[tokio::test]
async fn stops_at_the_request_budget_and_counts_each_answer() {
    let seen = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&seen);
    let base = serve(Router::new().route(
        "/ok",
        post(move |body: String| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::Relaxed);
                body.len().to_string()
            }
        }),
    ))
    .await;
    let config = LoadConfig::new(format!("{base}/ok").parse().unwrap())
        .json_body(random_inputs_body(8, 1))
        .concurrency(4)
        .duration(Duration::from_secs(60))
        .max_requests(50);
    let report = run(&config).await.unwrap();
    assert_eq!(report.ok, 50);
    assert_eq!(report.error_count(), 0);
    assert_eq!(seen.load(Ordering::Relaxed), 50);
    assert_eq!(report.latency_us.len(), 50);
}

#[tokio::test]
async fn counts_errors_by_status() {
    let base = serve(Router::new().route(
        "/full",
        post(|| async { (StatusCode::SERVICE_UNAVAILABLE, "queue full") }),
    ))
    .await;
    let config = LoadConfig::new(format!("{base}/full").parse().unwrap())
        .json_body("{}")
        .concurrency(2)
        .duration(Duration::from_secs(60))
        .max_requests(10);
    let report = run(&config).await.unwrap();
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors.get("http 503"), Some(&10));
    assert_eq!(report.summary().p50_ms, 0.0);
}

#[tokio::test]
async fn a_closed_port_is_a_connect_error_not_a_hang() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let config = LoadConfig::new(format!("http://{addr}/").parse().unwrap())
        .duration(Duration::from_secs(60))
        .max_requests(3);
    let report = run(&config).await.unwrap();
    assert_eq!(report.ok, 0);
    assert_eq!(report.errors.get("connect"), Some(&3));
}
