//! The batcher composed with tower middleware, behind an axum route and
//! inside a tonic-style gRPC handler.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use convoy_batcher::{
    batch_fn, Batch, BatchConfig, BatchLayer, DeadlineExceeded, OverflowPolicy, QueueFull,
};
use support::*;
use tokio_test::assert_pending;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt};

#[tokio::test(start_paused = true)]
async fn load_shed_turns_a_full_queue_into_an_immediate_error() {
    let config = BatchConfig::builder().queue_capacity(1).build().unwrap();
    let (svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let mut shed = ServiceBuilder::new().load_shed().service(svc);
    let mut first = call(&mut shed, 1);
    assert_pending!(drive(&mut worker));
    // Still queued (the batch service is not ready): the queue is full.
    let mut second = call(&mut shed, 2);
    let err = match second.poll() {
        std::task::Poll::Ready(r) => r.unwrap_err(),
        std::task::Poll::Pending => panic!("load_shed must answer at once"),
    };
    assert!(err.is::<tower::load_shed::error::Overloaded>(), "{err}");
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    echo(b, s);
    assert_pending!(drive(&mut worker));
    assert!(first.poll().is_ready());
}

#[tokio::test(start_paused = true)]
async fn timeout_cancels_and_the_batch_service_never_sees_the_item() {
    let config = BatchConfig::builder().build().unwrap();
    let (svc, worker, mut handle) = batcher(config);
    handle.allow(0);
    let worker = tokio::spawn(worker.into_inner());
    let mut timed = ServiceBuilder::new()
        .timeout(Duration::from_millis(50))
        .service(svc.clone());
    let err = timed.ready().await.unwrap().call(1).await.unwrap_err();
    assert!(err.is::<tower::timeout::error::Elapsed>(), "{err}");
    // The caller is gone: when the batch service frees up, item 1 is skipped.
    let answer = tokio::spawn(svc.clone().oneshot(2));
    tokio::task::yield_now().await;
    handle.allow(1);
    let (batch, send) = handle.next_request().await.unwrap();
    assert_eq!(batch, vec![2]);
    send.send_response(batch);
    assert_eq!(answer.await.unwrap().unwrap(), 2);
    assert_eq!(svc.handle().stats().cancelled_total, 1);
    drop((svc, timed));
    worker.await.unwrap();
}

#[tokio::test]
async fn service_builder_stack_with_concurrency_limit() {
    let config = BatchConfig::builder().max_batch_size(4).build().unwrap();
    let svc = ServiceBuilder::new()
        .load_shed()
        .timeout(Duration::from_secs(5))
        .concurrency_limit(64)
        .layer(BatchLayer::<u32, u32>::new(config))
        .service_fn(|xs: Vec<u32>| async move {
            Ok::<_, Infallible>(xs.into_iter().map(|x| x + 1).collect::<Vec<u32>>())
        });
    let answers = futures::future::join_all((0..32).map(|i| svc.clone().oneshot(i))).await;
    for (i, a) in answers.into_iter().enumerate() {
        assert_eq!(a.unwrap(), i as u32 + 1);
    }
}

/// The error a client sees for each batcher error.
fn status_of(err: &BoxError) -> StatusCode {
    if err.is::<QueueFull>() || err.is::<tower::load_shed::error::Overloaded>() {
        StatusCode::SERVICE_UNAVAILABLE
    } else if err.is::<DeadlineExceeded>() || err.is::<tower::timeout::error::Elapsed>() {
        StatusCode::GATEWAY_TIMEOUT
    } else {
        StatusCode::INTERNAL_SERVER_ERROR
    }
}

async fn infer(
    State(model): State<Batch<u32, u32>>,
    Json(x): Json<u32>,
) -> Result<Json<u32>, StatusCode> {
    model.oneshot(x).await.map(Json).map_err(|e| status_of(&e))
}

#[tokio::test]
async fn behind_an_axum_route() {
    let config = BatchConfig::builder()
        .queue_capacity(1)
        .overflow(OverflowPolicy::Reject)
        .build()
        .unwrap();
    let model = batch_fn(config, |xs: Vec<u32>| async move {
        Ok::<_, Infallible>(xs.into_iter().map(|x| x * 10).collect::<Vec<u32>>())
    });
    let app = Router::new()
        .route("/infer", post(infer))
        .with_state(model.clone());
    let request = || {
        Request::post("/infer")
            .header("content-type", "application/json")
            .body(Body::from("4"))
            .unwrap()
    };
    let response = app.clone().oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let body = axum::body::to_bytes(response.into_body(), 64)
        .await
        .unwrap();
    assert_eq!(&body[..], b"40");

    // A full queue is a 503, not a hang.
    // Occupy the only slot with a caller whose batch waits on a closed gate.
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let gated = {
        let gate = gate.clone();
        batch_fn(
            BatchConfig::builder()
                .queue_capacity(1)
                .overflow(OverflowPolicy::Reject)
                .build()
                .unwrap(),
            move |xs: Vec<u32>| {
                let gate = gate.clone();
                async move {
                    let _ = gate.acquire().await;
                    Ok::<_, Infallible>(xs)
                }
            },
        )
    };
    let app = Router::new()
        .route("/infer", post(infer))
        .with_state(gated.clone());
    let running = tokio::spawn(gated.clone().oneshot(1));
    while gated.handle().stats().in_flight_batches == 0 {
        tokio::task::yield_now().await;
    }
    let queued = tokio::spawn(gated.clone().oneshot(2));
    while gated.handle().stats().queue_depth == 0 {
        tokio::task::yield_now().await;
    }
    let response = app.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    gate.add_permits(10);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
}

/// A hand-written tonic handler (what `tonic-build` would generate a trait
/// for): the batcher behind a gRPC method.
#[derive(Clone)]
struct Scorer {
    model: Batch<u32, u32>,
}

impl Scorer {
    async fn score(
        &self,
        request: tonic::Request<u32>,
    ) -> Result<tonic::Response<u32>, tonic::Status> {
        let x = request.into_inner();
        match self.model.clone().oneshot(x).await {
            Ok(y) => Ok(tonic::Response::new(y)),
            Err(e) if e.is::<QueueFull>() => Err(tonic::Status::resource_exhausted(e.to_string())),
            Err(e) if e.is::<DeadlineExceeded>() => {
                Err(tonic::Status::deadline_exceeded(e.to_string()))
            }
            Err(e) => Err(tonic::Status::internal(e.to_string())),
        }
    }
}

#[tokio::test]
async fn inside_a_tonic_service() {
    let config = BatchConfig::builder()
        .queue_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    let model = {
        let gate = gate.clone();
        batch_fn(config, move |xs: Vec<u32>| {
            let gate = gate.clone();
            async move {
                let _ = gate.acquire().await;
                Ok::<_, Infallible>(xs.into_iter().map(|x| x + 1).collect::<Vec<u32>>())
            }
        })
    };
    let scorer = Scorer { model };
    // The first call occupies the batch service; the second waits past its
    // queue timeout and is answered DEADLINE_EXCEEDED without running.
    let first = tokio::spawn({
        let scorer = scorer.clone();
        async move { scorer.score(tonic::Request::new(1)).await }
    });
    while scorer.model.handle().stats().in_flight_batches == 0 {
        tokio::task::yield_now().await;
    }
    let status = scorer.score(tonic::Request::new(2)).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded);
    gate.add_permits(10);
    assert_eq!(first.await.unwrap().unwrap().into_inner(), 2);
    assert_eq!(
        scorer
            .score(tonic::Request::new(5))
            .await
            .unwrap()
            .into_inner(),
        6
    );
}

#[test]
fn the_service_is_send_sync_clone_and_static() {
    fn assert_service<T: Clone + Send + Sync + 'static>() {}
    assert_service::<Batch<u32, u32>>();
    assert_service::<Batch<String, Vec<f32>>>();
    assert_service::<convoy_batcher::BatchHandle>();
    assert_service::<BatchLayer<u32, u32>>();
    fn assert_future<F: std::future::Future + Send + Sync + 'static>() {}
    assert_future::<convoy_batcher::ResponseFuture<u32>>();
}

#[tokio::test(start_paused = true)]
async fn a_panicking_request_function_does_not_leak_a_queue_slot() {
    let layer =
        BatchLayer::<u32, u32>::new(BatchConfig::builder().queue_capacity(1).build().unwrap())
            .key_fn(|x: &u32| {
                assert_ne!(*x, 13, "bad request");
                0
            });
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(ready.poll().is_ready());
    drop(ready);
    let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        drop(svc.call(13));
    }));
    assert!(panicked.is_err());
    // The slot reserved for the panicking call is still this handle's.
    let mut ok = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    echo(b, s);
    assert_pending!(drive(&mut worker));
    assert!(ok.poll().is_ready());
}
