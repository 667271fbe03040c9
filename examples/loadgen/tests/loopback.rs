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

/// The coordinated-omission check: the server stalls the whole runtime
/// (and with it the load generator) for 400 ms once. An open loop measures
/// from the intended send time, so every request scheduled during the stall
/// shows it; a closed loop with one client sees one slow request.
#[tokio::test]
async fn a_stall_shows_in_every_request_scheduled_during_it() {
    let stall = |hits: Arc<AtomicU64>| {
        post(move || {
            let hits = Arc::clone(&hits);
            async move {
                if hits.fetch_add(1, Ordering::Relaxed) == 20 {
                    // Blocks the (current-thread) runtime, like a server
                    // process that stops.
                    std::thread::sleep(Duration::from_millis(400));
                }
                "ok"
            }
        })
    };
    let open_base = serve(Router::new().route("/s", stall(Arc::default()))).await;
    let config = LoadConfig::new(format!("{open_base}/s").parse().unwrap())
        .json_body("{}")
        .open_loop(200.0)
        .seed(3)
        .duration(Duration::from_millis(1500));
    let open = run(&config).await.unwrap();
    assert_eq!(open.error_count(), 0, "{:?}", open.errors);
    // About 80 arrivals fall in the stall; their latencies spread from
    // 400 ms down to 0. Expect well over 20 at 100 ms or more.
    let slow_open = open.count_at_least_ms(100.0);
    assert!(
        slow_open >= 20,
        "open loop: {slow_open} slow of {}",
        open.ok
    );
    assert!(open.latency_ms(0.99) >= 250.0, "{}", open.latency_ms(0.99));

    let closed_base = serve(Router::new().route("/s", stall(Arc::default()))).await;
    let config = LoadConfig::new(format!("{closed_base}/s").parse().unwrap())
        .json_body("{}")
        .concurrency(1)
        .duration(Duration::from_millis(1500))
        .max_requests(300);
    let closed = run(&config).await.unwrap();
    // The closed loop saw the stall too, but in one request (a margin of
    // one for a scheduling hiccup on a busy machine).
    let slow_closed = closed.count_at_least_ms(300.0);
    assert!(
        (1..=2).contains(&slow_closed),
        "closed loop: {slow_closed} slow of {}",
        closed.ok
    );
}

#[tokio::test]
async fn open_loop_sends_at_the_rate_and_drops_beyond_max_outstanding() {
    let base = serve(Router::new().route("/ok", post(|| async { "ok" }))).await;
    let config = LoadConfig::new(format!("{base}/ok").parse().unwrap())
        .json_body("{}")
        .open_loop(400.0)
        .duration(Duration::from_secs(60))
        .max_requests(200);
    let report = run(&config).await.unwrap();
    assert_eq!(report.scheduled, 200);
    assert_eq!(report.ok + report.error_count(), 200);
    assert_eq!(report.summary().offered_per_s, Some(400.0));

    // A server that never answers within the run: one slot, the rest dropped.
    let base = serve(Router::new().route(
        "/slow",
        post(|| async {
            tokio::time::sleep(Duration::from_secs(2)).await;
            "late"
        }),
    ))
    .await;
    let config = LoadConfig::new(format!("{base}/slow").parse().unwrap())
        .json_body("{}")
        .open_loop(500.0)
        .max_outstanding(3)
        .duration(Duration::from_secs(60))
        .max_requests(40)
        .request_timeout(Duration::from_millis(500));
    let report = run(&config).await.unwrap();
    assert_eq!(
        report.errors.get("timeout"),
        Some(&3),
        "{:?}",
        report.errors
    );
    assert_eq!(
        report.errors.get(loadgen::DROPPED),
        Some(&37),
        "{:?}",
        report.errors
    );
}

#[tokio::test]
async fn bodies_from_files_go_out_in_turn() {
    let seen = Arc::new(tokio::sync::Mutex::new(Vec::new()));
    let log = Arc::clone(&seen);
    let base = serve(Router::new().route(
        "/img",
        post(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let log = Arc::clone(&log);
                async move {
                    let ct = headers["content-type"].to_str().unwrap().to_owned();
                    log.lock().await.push((ct, body.to_vec()));
                    "ok"
                }
            },
        ),
    ))
    .await;
    let dir = std::env::temp_dir().join(format!("loadgen-bodies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("1.jpg"), b"J").unwrap();
    std::fs::write(dir.join("2.png"), b"P").unwrap();
    let config = LoadConfig::new(format!("{base}/img").parse().unwrap())
        .payloads(loadgen::payload::Payloads::from_dir(&dir).unwrap())
        .concurrency(1)
        .max_requests(4)
        .duration(Duration::from_secs(60));
    let report = run(&config).await.unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(report.ok, 4);
    let seen = seen.lock().await;
    let expected: Vec<(String, Vec<u8>)> = [("image/jpeg", b"J"), ("image/png", b"P")]
        .repeat(2)
        .into_iter()
        .map(|(ct, b)| (ct.to_owned(), b.to_vec()))
        .collect();
    assert_eq!(*seen, expected);
}

#[tokio::test]
async fn a_sweep_gives_one_point_per_rate_and_a_plot() {
    let base = serve(Router::new().route("/ok", post(|| async { "ok" }))).await;
    let config = LoadConfig::new(format!("{base}/ok").parse().unwrap())
        .json_body("{}")
        .open_loop(1.0)
        .duration(Duration::from_millis(300));
    let target = Arc::new(loadgen::HttpTarget::new(loadgen::http_client(64), &config).unwrap());
    let mut seen = 0;
    let points = loadgen::sweep::sweep(target, &config, &[50.0, 100.0], Duration::ZERO, |_| {
        seen += 1
    })
    .await
    .unwrap();
    assert_eq!(seen, 2);
    assert_eq!(
        points.iter().map(|p| p.offered_per_s).collect::<Vec<_>>(),
        [50.0, 100.0]
    );
    assert!(points
        .iter()
        .all(|p| p.summary.ok > 0 && p.summary.errors == 0));
    let path = std::env::temp_dir().join(format!("loadgen-sweep-{}.svg", std::process::id()));
    loadgen::plot::sweep_plot(&path, "ok", &points).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() > 1000);
    std::fs::remove_file(&path).unwrap();
}
