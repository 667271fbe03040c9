//! The app on a real loopback socket, driven by the example load generator.

use std::sync::Arc;
use std::time::Duration;

use example_batch_axum::{
    app, AppState, Mlp, ServerConfig, BATCHED_ROUTE, STATS_ROUTE, UNBATCHED_ROUTE,
};
use loadgen::{get_body, http_client, random_inputs_body, run, LoadConfig};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_request_is_answered_and_counted() {
    let model = Arc::new(Mlp::seeded(&[64, 128, 8], 5).unwrap());
    let config = ServerConfig {
        max_batch_size: 8,
        ..ServerConfig::default()
    };
    let state = AppState::new(model, &config).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app(state)).await });

    for route in [BATCHED_ROUTE, UNBATCHED_ROUTE] {
        let load = LoadConfig::new(format!("{base}{route}").parse().unwrap())
            .json_body(random_inputs_body(64, 3))
            .concurrency(16)
            .duration(Duration::from_secs(60))
            .max_requests(200);
        let report = run(&load).await.unwrap();
        assert_eq!(report.ok, 200, "{route}: {:?}", report.errors);
        assert_eq!(report.error_count(), 0);
    }

    let body = get_body(
        &http_client(1),
        &format!("{base}{STATS_ROUTE}").parse().unwrap(),
    )
    .await
    .unwrap();
    let stats: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let (batches, items) = loadgen::demo::stats_totals(&body).unwrap();
    assert_eq!(items, 200, "{stats}");
    // No batch is empty and none is over the cap.
    assert!(batches <= items && batches * 8 >= items, "{stats}");
    assert_eq!(stats["unbatched"]["calls"], 200);
}
