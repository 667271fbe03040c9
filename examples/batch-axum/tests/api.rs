//! The router, driven with `tower::ServiceExt::oneshot`.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use axum::Router;
use example_batch_axum::{
    app, ApiError, AppState, InferResponse, Mlp, ServerConfig, BATCHED_ROUTE, MODEL_ROUTE,
    STATS_ROUTE, UNBATCHED_ROUTE,
};
use http_body_util::BodyExt;
use tower::ServiceExt;

fn small_model() -> Arc<Mlp> {
    Arc::new(Mlp::seeded(&[8, 16, 4], 9).unwrap())
}

fn input(k: f32) -> Vec<f32> {
    (0..8).map(|i| (i as f32 * 0.1 - 0.4) * k).collect()
}

fn post_json(route: &str, body: impl Into<Body>) -> Request<Body> {
    Request::post(route)
        .header(header::CONTENT_TYPE, "application/json")
        .body(body.into())
        .unwrap()
}

fn infer_body(inputs: &[f32]) -> String {
    serde_json::json!({ "inputs": inputs }).to_string()
}

async fn call(router: &Router, req: Request<Body>) -> (StatusCode, serde_json::Value) {
    let resp = router.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let json = serde_json::from_slice(&bytes)
        .unwrap_or_else(|e| panic!("{status}: body is not JSON ({e}): {bytes:?}"));
    (status, json)
}

fn setup() -> (Arc<Mlp>, AppState, Router) {
    let model = small_model();
    let state = AppState::new(Arc::clone(&model), &ServerConfig::default()).unwrap();
    let router = app(state.clone());
    (model, state, router)
}

#[tokio::test]
async fn both_routes_answer_what_the_model_computes() {
    let (model, _, router) = setup();
    for k in [1.0, -2.0, 0.5] {
        let x = input(k);
        let want = model.infer_one(x.clone()).unwrap();
        for route in [BATCHED_ROUTE, UNBATCHED_ROUTE] {
            let (status, json) = call(&router, post_json(route, infer_body(&x))).await;
            assert_eq!(status, StatusCode::OK, "{route}: {json}");
            let got: InferResponse = serde_json::from_value(json).unwrap();
            assert_eq!(got.outputs, want, "{route}");
        }
    }
}

#[tokio::test]
async fn concurrent_requests_each_get_their_own_answer() {
    let (model, _, router) = setup();
    let calls = (0..40).map(|i| {
        let router = router.clone();
        let x = input(i as f32 / 7.0);
        async move {
            let (status, json) = call(&router, post_json(BATCHED_ROUTE, infer_body(&x))).await;
            assert_eq!(status, StatusCode::OK);
            (
                x,
                serde_json::from_value::<InferResponse>(json)
                    .unwrap()
                    .outputs,
            )
        }
    });
    for (x, got) in futures_join_all(calls).await {
        let want = model.infer_one(x).unwrap();
        for (a, b) in got.iter().zip(&want) {
            assert!((a - b).abs() < 1e-5, "{got:?} vs {want:?}");
        }
    }
}

async fn futures_join_all<F: std::future::Future + Send + 'static>(
    futs: impl Iterator<Item = F>,
) -> Vec<F::Output>
where
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn wrong_width_is_422_with_a_clear_message() {
    let (_, _, router) = setup();
    for route in [BATCHED_ROUTE, UNBATCHED_ROUTE] {
        let (status, json) = call(&router, post_json(route, infer_body(&[1.0, 2.0]))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
        let msg = json["error"].as_str().unwrap();
        assert!(msg.contains("exactly 8") && msg.contains("got 2"), "{msg}");
    }
}

#[tokio::test]
async fn malformed_json_is_400() {
    let (_, _, router) = setup();
    let (status, json) = call(&router, post_json(BATCHED_ROUTE, "{\"inputs\": [1.0,")).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(json["error"].as_str().unwrap().contains("parse"), "{json}");
}

#[tokio::test]
async fn wrong_types_are_422() {
    let (_, _, router) = setup();
    let (status, json) = call(&router, post_json(UNBATCHED_ROUTE, r#"{"inputs":"nope"}"#)).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(json["error"].as_str().unwrap().contains("inputs"), "{json}");
}

#[tokio::test]
async fn missing_content_type_is_415() {
    let (_, _, router) = setup();
    let req = Request::post(BATCHED_ROUTE)
        .body(Body::from(infer_body(&input(1.0))))
        .unwrap();
    let (status, json) = call(&router, req).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(json["error"].is_string());
}

#[tokio::test]
async fn stats_count_batched_items() {
    let (_, _, router) = setup();
    for k in 0..5 {
        let (status, _) = call(
            &router,
            post_json(BATCHED_ROUTE, infer_body(&input(k as f32))),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
    }
    let (status, _) = call(&router, post_json(UNBATCHED_ROUTE, infer_body(&input(1.0)))).await;
    assert_eq!(status, StatusCode::OK);
    let (status, json) = call(
        &router,
        Request::get(STATS_ROUTE).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["totals"]["items"], 5, "{json}");
    let batches = json["totals"]["batches"].as_u64().unwrap();
    assert!((1..=5).contains(&batches), "{json}");
    assert_eq!(json["unbatched"]["calls"], 1, "{json}");
    assert!(json["batcher"].is_object(), "{json}");
}

#[tokio::test]
async fn model_info_describes_the_network() {
    let (_, _, router) = setup();
    let (status, json) = call(
        &router,
        Request::get(MODEL_ROUTE).body(Body::empty()).unwrap(),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(json["dims"], serde_json::json!([8, 16, 4]));
    assert_eq!(json["parameters"], 8 * 16 + 16 + 16 * 4 + 4);
}

#[tokio::test]
async fn closed_batcher_is_503_with_retry_after() {
    let (_, state, router) = setup();
    state.batched().handle().close();
    let resp = router
        .clone()
        .oneshot(post_json(BATCHED_ROUTE, infer_body(&input(1.0))))
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
    // The unbatched route is independent of the batcher.
    let (status, _) = call(&router, post_json(UNBATCHED_ROUTE, infer_body(&input(1.0)))).await;
    assert_eq!(status, StatusCode::OK);
}

#[test]
fn batcher_errors_map_to_statuses() {
    use convoy_batcher::{DeadlineExceeded, QueueFull};
    let full = ApiError::from_batch(Box::new(QueueFull::default()));
    assert_eq!(full.status(), StatusCode::SERVICE_UNAVAILABLE);
    let late = ApiError::from_batch(Box::new(DeadlineExceeded::default()));
    assert_eq!(late.status(), StatusCode::GATEWAY_TIMEOUT);
    let other = ApiError::from_batch("boom".into());
    assert_eq!(other.status(), StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(other.message(), "boom");
}

#[test]
fn impossible_config_is_an_error_not_a_panic() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let config = ServerConfig {
            max_batch_size: 0,
            ..ServerConfig::default()
        };
        assert!(AppState::new(small_model(), &config).is_err());
    });
}
