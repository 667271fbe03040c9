//! The whole stack in process, in paused tokio time: a rollout moves users
//! from v1 to v2 under load while each version autoscales, and every
//! request gets exactly one answer.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::Router;
use convoy_router::rollout::RolloutState;
use example_serving_stack::{InferResponse, Stack, StackConfig, Stats, VERSION_HEADER};
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn post(app: &Router, body: &str, version: Option<&str>) -> (StatusCode, Vec<u8>) {
    let mut req = Request::post("/infer").header("content-type", "application/json");
    if let Some(v) = version {
        req = req.header(VERSION_HEADER, v);
    }
    let rsp = app
        .clone()
        .oneshot(req.body(Body::from(body.to_string())).unwrap())
        .await
        .unwrap();
    let status = rsp.status();
    (
        status,
        rsp.into_body().collect().await.unwrap().to_bytes().to_vec(),
    )
}

async fn stats(app: &Router) -> Stats {
    let rsp = app
        .clone()
        .oneshot(Request::get("/stats").body(Body::empty()).unwrap())
        .await
        .unwrap();
    serde_json::from_slice(&rsp.into_body().collect().await.unwrap().to_bytes()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_rollout_under_load_with_autoscaling_answers_every_request() {
    // A replica does at most 8 items per 52 ms (154 items/s): 400 requests/s
    // need three of them.
    let cfg = StackConfig {
        batch_cost: Duration::from_millis(20),
        item_cost: Duration::from_millis(4),
        max_batch_size: 8,
        ..StackConfig::default()
    };
    let stack = Stack::new(&cfg).unwrap();
    let app = stack.app();
    // Replicas start after their cold start.
    tokio::time::sleep(Duration::from_secs(2)).await;

    // Before the rollout: everyone on v1, testers can pin v2.
    let (status, body) = post(&app, r#"{"user": 1, "features": [1, 2]}"#, Some("v2")).await;
    assert_eq!(status, StatusCode::OK);
    let r: InferResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!(r.version, "v2");
    let (_, body) = post(&app, r#"{"user": 1, "features": [1, 2]}"#, None).await;
    let r: InferResponse = serde_json::from_slice(&body).unwrap();
    assert_eq!((r.version.as_str(), r.score), ("v1", 3.0));

    // 400 requests/s from 2,000 users while v2 goes 10 → 50 → 100 %.
    let rollout = stack
        .rollout(vec![10.0, 50.0, 100.0], Duration::from_secs(10))
        .unwrap();
    let mut events = rollout.subscribe();
    let answers = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let load = tokio::spawn({
        let (app, answers) = (app.clone(), Arc::clone(&answers));
        async move {
            let mut tick = tokio::time::interval(Duration::from_micros(2_500));
            let mut calls = Vec::new();
            for i in 0..400 * 45u64 {
                tick.tick().await;
                let (app, answers) = (app.clone(), Arc::clone(&answers));
                calls.push(tokio::spawn(async move {
                    let body =
                        format!(r#"{{"user": {}, "features": [0.5, 1.5]}}"#, i * 7919 % 2000);
                    let (status, body) = post(&app, &body, None).await;
                    assert_eq!(status, StatusCode::OK, "{}", String::from_utf8_lossy(&body));
                    let r: InferResponse = serde_json::from_slice(&body).unwrap();
                    assert!(r.version == "v1" || r.version == "v2");
                    answers.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }));
            }
            for c in calls {
                c.await.unwrap();
            }
        }
    });
    let end = rollout.finished().await;
    while let Ok(e) = events.try_recv() {
        eprintln!("{:?} {}% {}", e.kind, e.canary_percent, e.reason);
    }
    assert_eq!(end, RolloutState::Promoted);
    let during = stats(&app).await;
    load.await.unwrap();
    assert_eq!(answers.load(std::sync::atomic::Ordering::Relaxed), 400 * 45);

    let after = stats(&app).await;
    eprintln!("during: {during:?}\nafter: {after:?}");
    let v1 = &after.split[0];
    let v2 = &after.split[1];
    assert_eq!((v1.weight, v2.weight), (0.0, 100.0));
    assert_eq!(v1.errors + v2.errors, 0);
    assert_eq!(v1.requests + v2.requests, 400 * 45 + 2);
    // Both versions had work, v2 ended with all of it, and each scaled past
    // the one replica it started with to carry its share.
    assert!(v2.requests > v1.requests / 4, "{after:?}");
    assert!(
        during.split.iter().all(|v| v.ready_replicas >= 3),
        "{during:?}"
    );
    assert_eq!((v1.in_flight, v2.in_flight), (0, 0));
    stack.shutdown();
}

#[tokio::test(start_paused = true)]
async fn bad_requests_get_a_4xx_with_a_message() {
    let stack = Stack::new(&StackConfig::default()).unwrap();
    let app = stack.app();
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (body, version, want) in [
        ("not json", None, StatusCode::BAD_REQUEST),
        (r#"{"user": 1}"#, None, StatusCode::UNPROCESSABLE_ENTITY),
        (
            r#"{"user": 1, "features": []}"#,
            None,
            StatusCode::UNPROCESSABLE_ENTITY,
        ),
        (
            r#"{"user": 1, "features": [1]}"#,
            Some("v9"),
            StatusCode::BAD_REQUEST,
        ),
    ] {
        let (status, message) = post(&app, body, version).await;
        assert_eq!(status, want, "{body}");
        assert!(!message.is_empty(), "{body}: no message");
    }
    let many = format!(
        r#"{{"user": 1, "features": [{}]}}"#,
        vec!["1"; 5000].join(",")
    );
    let (status, message) = post(&app, &many, None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(String::from_utf8_lossy(&message).contains("4096"));
    stack.shutdown();
}
