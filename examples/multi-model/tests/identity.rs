//! The server end to end with the built-in identity model (no torch): a
//! real socket, the checked-in test configuration, every request through
//! Split → LoadObserver → Balancer → ReplicaSet → Batch → tenant → model.

mod common;

use std::collections::HashSet;

use bytes::Bytes;
use common::{fp32_row, start, TEST_CONFIG};
use futures::future::join_all;
use hyper::{Method, StatusCode};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_echoes_every_datatype() {
    let s = start(TEST_CONFIG).await;
    let body = serde_json::json!({"inputs": [
        {"name": "a", "datatype": "FP32", "shape": [2, 2], "data": [1.5, 2.0, -3.0, 4.25]},
        {"name": "b", "datatype": "INT64", "shape": [2], "data": [7, -9]},
        {"name": "c", "datatype": "BYTES", "shape": [2, 1], "data": ["hello", "convoy"]},
        {"name": "d", "datatype": "BOOL", "shape": [2], "data": [true, false]},
        {"name": "e", "datatype": "FP16", "shape": [2], "data": [0.5, -2.0]},
    ]});
    let r = s.post("/v1/models/identity/infer", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let out = r.json();
    assert_eq!(out["model_name"], "identity");
    assert_eq!(out["outputs"], body["inputs"]);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_split_routes_to_both_versions() {
    let s = start(TEST_CONFIG).await;
    let mut seen = HashSet::new();
    for i in 0..20 {
        let r = s
            .post("/v1/models/identity/infer", fp32_row(&[i as f32]))
            .await;
        assert_eq!(r.status, StatusCode::OK);
        seen.insert(r.json()["model_version"].as_str().unwrap().to_string());
    }
    assert_eq!(seen, HashSet::from(["1".to_string(), "2".to_string()]));
    // Pinning a version is honoured; an unknown one is a 400.
    let r = s
        .request(
            Method::POST,
            "/v1/models/identity/infer",
            Bytes::from(fp32_row(&[1.0])),
            &[("x-convoy-version", "2")],
        )
        .await;
    assert_eq!(r.json()["model_version"], "2");
    let r = s
        .request(
            Method::POST,
            "/v1/models/identity/infer",
            Bytes::from(fp32_row(&[1.0])),
            &[("x-convoy-version", "9")],
        )
        .await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let models = s.models().await;
    let versions = models["models"][0]["versions"].as_array().unwrap();
    assert!(
        versions
            .iter()
            .all(|v| v["requests"].as_u64().unwrap() >= 5),
        "{versions:?}"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_form_batches() {
    let s = start(TEST_CONFIG).await;
    let replies = join_all((0..32).map(|i| {
        let s = &s;
        async move {
            s.post("/v1/models/identity/infer", fp32_row(&[i as f32, 1.0]))
                .await
        }
    }))
    .await;
    for (i, r) in replies.iter().enumerate() {
        assert_eq!(r.status, StatusCode::OK);
        assert_eq!(r.json()["outputs"][0]["data"][0], i as f64);
    }
    let models = s.models().await;
    let versions = models["models"][0]["versions"].as_array().unwrap();
    let (requests, batches) = versions.iter().fold((0, 0), |(r, b), v| {
        (
            r + v["batch"]["requests"].as_u64().unwrap(),
            b + v["batch"]["batches"].as_u64().unwrap(),
        )
    });
    assert_eq!(requests, 32);
    assert!(
        batches < 32,
        "32 requests in {batches} batches: no batch above 1"
    );
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_refused_with_503() {
    let s = start(TEST_CONFIG).await;
    // One replica, one item per 300 ms batch, four queued at most.
    let replies = join_all((0..16).map(|i| {
        let s = &s;
        async move { s.post("/v1/models/slow/infer", fp32_row(&[i as f32])).await }
    }))
    .await;
    let ok = replies
        .iter()
        .filter(|r| r.status == StatusCode::OK)
        .count();
    let refused: Vec<_> = replies
        .iter()
        .filter(|r| r.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert_eq!(ok + refused.len(), 16);
    assert!(
        ok >= 1 && !refused.is_empty(),
        "{ok} answered, {} refused",
        refused.len()
    );
    assert!(refused[0].json()["error"]
        .as_str()
        .unwrap()
        .contains("queue"));
    // Each refusal says when to try again.
    for r in &refused {
        assert_eq!(
            r.headers.get("retry-after").and_then(|v| v.to_str().ok()),
            Some("1")
        );
    }
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_4xx() {
    let s = start(TEST_CONFIG).await;
    // Bodies over the body limit: tests/body_limit.rs, over raw TCP (the
    // server answers 413 before reading the body, so a client still
    // writing it may see a broken pipe instead of the answer).
    // Unknown model, unknown task.
    let r = s.post("/v1/models/nope/infer", fp32_row(&[1.0])).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    assert!(r.json()["error"].as_str().unwrap().contains("nope"));
    let r = s
        .post("/v1/models/identity/classify", fp32_row(&[1.0]))
        .await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // Malformed JSON, shape/data mismatch, unknown datatype, a huge shape.
    for (body, status, says) in [
        ("{", StatusCode::BAD_REQUEST, "invalid JSON"),
        (
            r#"{"inputs":[{"name":"x","datatype":"FP32","shape":[2,2],"data":[1,2,3]}]}"#,
            StatusCode::BAD_REQUEST,
            "4 elements",
        ),
        (
            r#"{"inputs":[{"name":"x","datatype":"FP99","shape":[1],"data":[1]}]}"#,
            StatusCode::BAD_REQUEST,
            "datatype",
        ),
        (
            r#"{"inputs":[{"name":"x","datatype":"UINT8","shape":[1000000,1000000],"data":[1]}]}"#,
            StatusCode::BAD_REQUEST,
            "elements",
        ),
        (
            r#"{"inputs":[{"name":"x","datatype":"UINT8","shape":[1],"data":[300]}]}"#,
            StatusCode::BAD_REQUEST,
            "does not fit",
        ),
        (
            r#"{"inputs":[]}"#,
            StatusCode::UNPROCESSABLE_ENTITY,
            "at least one",
        ),
    ] {
        let r = s.post("/v1/models/identity/infer", body).await;
        assert_eq!(r.status, status, "{body}");
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(msg.contains(says), "{body}: {msg}");
    }
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_response_carries_a_request_id_and_metrics_count_it() {
    let s = start(TEST_CONFIG).await;
    let r = s
        .request(
            Method::POST,
            "/v1/models/identity/infer",
            Bytes::from(fp32_row(&[1.0])),
            &[("x-request-id", "abc-123")],
        )
        .await;
    assert_eq!(r.headers["x-request-id"], "abc-123");
    let a = s.get("/v1/models/nope").await;
    let b = s.get("/healthz").await;
    let (a, b) = (&a.headers["x-request-id"], &b.headers["x-request-id"]);
    assert!(!a.is_empty() && a != b);
    let metrics = s.get("/metrics").await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("convoy_server_requests_total{model=\"identity\""),
        "{text}"
    );
    assert!(
        text.contains("convoy_server_request_seconds_bucket"),
        "{text}"
    );
    assert!(text.contains("convoy_http_responses_total"), "{text}");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_lists_deployments_with_their_settings() {
    let s = start(TEST_CONFIG).await;
    let m = s.models().await;
    let d = &m["models"][0];
    assert_eq!(d["name"], "identity");
    assert_eq!(d["kind"], "identity");
    assert_eq!(d["device"], "cpu");
    assert_eq!(d["ready"], true);
    assert_eq!(d["batching"]["max_batch_size"], 16);
    assert_eq!(d["versions"][0]["weight"], 50.0);
    assert_eq!(d["versions"][0]["ready_replicas"], 1);
    assert_eq!(m["models"][1]["name"], "slow");
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_shutdown_finishes_admitted_work() {
    let s = start(TEST_CONFIG).await;
    let addr = s.addr;
    let client = s.client.clone();
    // Three requests admitted to the slow model (300 ms each, one at a time).
    let inflight: Vec<_> = (0..3)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let req = hyper::Request::post(format!("http://{addr}/v1/models/slow/infer"))
                    .body(http_body_util::Full::new(Bytes::from(fp32_row(
                        &[i as f32],
                    ))))
                    .unwrap();
                client.request(req).await.map(|r| r.status())
            })
        })
        .collect();
    s.until(|| async {
        let m = s.models().await;
        m["models"][1]["versions"][0]["batch"]["requests"].as_u64() == Some(3)
    })
    .await;
    let server = std::sync::Arc::clone(&s.server);
    s.shutdown().await;
    for r in inflight {
        assert_eq!(r.await.unwrap().unwrap(), StatusCode::OK);
    }
    assert_eq!(
        server.deployments[1].versions()[0].batch_stats().completed,
        3
    );
    // No longer accepting.
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}
