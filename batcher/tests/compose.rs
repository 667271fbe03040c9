//! The batcher composed with tower middleware, behind an axum route and
//! behind a tonic gRPC server on a loopback connection.

mod support;

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{Request, StatusCode};
use axum::routing::post;
use axum::{Json, Router};
use bytes::{Buf, BufMut};
use convoy_batcher::{
    batch_fn, Batch, BatchConfig, BatchLayer, DeadlineExceeded, OverflowPolicy, QueueFull,
};
use http::uri::PathAndQuery;
use support::*;
use tokio_test::assert_pending;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::server::{NamedService, UnaryService};
use tonic::transport::server::TcpIncoming;
use tonic::transport::Channel;
use tonic::Status;
use tower::{BoxError, Layer, Service, ServiceBuilder, ServiceExt};

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
    eventually(
        || gated.handle().stats().in_flight_batches == 1,
        "the first batch",
    )
    .await;
    let queued = tokio::spawn(gated.clone().oneshot(2));
    eventually(|| gated.handle().stats().queue_depth == 1, "a queued call").await;
    let response = app.oneshot(request()).await.unwrap();
    assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    gate.add_permits(10);
    assert_eq!(running.await.unwrap().unwrap(), 1);
    assert_eq!(queued.await.unwrap().unwrap(), 2);
}

/// gRPC method path of the test service.
const SCORE_PATH: &str = "/convoy.test.Scorer/Score";

/// A `u32` as four big-endian bytes: a gRPC message without protobuf.
#[derive(Debug, Clone, Copy, Default)]
struct U32Codec;

impl Codec for U32Codec {
    type Encode = u32;
    type Decode = u32;
    type Encoder = U32Codec;
    type Decoder = U32Codec;

    fn encoder(&mut self) -> U32Codec {
        U32Codec
    }

    fn decoder(&mut self) -> U32Codec {
        U32Codec
    }
}

impl Encoder for U32Codec {
    type Item = u32;
    type Error = Status;

    fn encode(&mut self, item: u32, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_u32(item);
        Ok(())
    }
}

impl Decoder for U32Codec {
    type Item = u32;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<u32>, Status> {
        if src.remaining() != 4 {
            return Err(Status::invalid_argument("a message is 4 bytes"));
        }
        Ok(Some(src.get_u32()))
    }
}

/// A hand-written tonic service (what `tonic-build` would generate): the
/// batcher behind a gRPC method, served over HTTP/2.
#[derive(Clone)]
struct Scorer {
    model: Batch<u32, u32>,
}

impl Scorer {
    async fn score(self, request: tonic::Request<u32>) -> Result<tonic::Response<u32>, Status> {
        let x = request.into_inner();
        match self.model.oneshot(x).await {
            Ok(y) => Ok(tonic::Response::new(y)),
            Err(e) if e.is::<QueueFull>() => Err(Status::resource_exhausted(e.to_string())),
            Err(e) if e.is::<DeadlineExceeded>() => Err(Status::deadline_exceeded(e.to_string())),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

impl UnaryService<u32> for Scorer {
    type Response = u32;
    type Future = BoxFuture<Result<tonic::Response<u32>, Status>>;

    fn call(&mut self, request: tonic::Request<u32>) -> Self::Future {
        Box::pin(self.clone().score(request))
    }
}

impl<B> Service<http::Request<B>> for Scorer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let method = self.clone();
        Box::pin(async move {
            if req.uri().path() == SCORE_PATH {
                Ok(tonic::server::Grpc::new(U32Codec).unary(method, req).await)
            } else {
                Ok(Status::unimplemented(req.uri().path().to_owned()).into_http())
            }
        })
    }
}

impl NamedService for Scorer {
    const NAME: &'static str = "convoy.test.Scorer";
}

async fn score(mut client: tonic::client::Grpc<Channel>, x: u32) -> Result<u32, Status> {
    client
        .ready()
        .await
        .map_err(|e| Status::unavailable(e.to_string()))?;
    let response = client
        .unary(
            tonic::Request::new(x),
            PathAndQuery::from_static(SCORE_PATH),
            U32Codec,
        )
        .await?;
    Ok(response.into_inner())
}

#[tokio::test]
async fn behind_a_tonic_server() {
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(0));
    // Request 2 may wait 50 ms in the queue; the others have no deadline.
    let model = {
        let gate = gate.clone();
        BatchLayer::<u32, u32>::new(BatchConfig::builder().build().unwrap())
            .deadline_fn(|x: &u32| {
                (*x == 2).then(|| tokio::time::Instant::now() + Duration::from_millis(50))
            })
            .layer(tower::service_fn(move |xs: Vec<u32>| {
                let gate = gate.clone();
                async move {
                    let _ = gate.acquire().await;
                    Ok::<_, Infallible>(xs.into_iter().map(|x| x + 1).collect::<Vec<u32>>())
                }
            }))
    };
    let stats = model.handle();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(Scorer { model })
            .serve_with_incoming(TcpIncoming::from(listener)),
    );
    let channel = Channel::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let client = tonic::client::Grpc::new(channel);

    // The first call occupies the batch service; the next one waits past
    // its deadline and comes back DEADLINE_EXCEEDED without running.
    let first = tokio::spawn(score(client.clone(), 1));
    eventually(|| stats.stats().in_flight_batches == 1, "the first batch").await;
    let status = score(client.clone(), 2).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DeadlineExceeded, "{status}");

    // Calls that arrive over the connection while the service is busy
    // share one batch.
    let calls: Vec<_> = (10..18)
        .map(|x| tokio::spawn(score(client.clone(), x)))
        .collect();
    eventually(|| stats.stats().queue_depth == 8, "eight queued calls").await;
    gate.add_permits(100);
    assert_eq!(first.await.unwrap().unwrap(), 2);
    for (x, call) in (10..18).zip(calls) {
        assert_eq!(call.await.unwrap().unwrap(), x + 1);
    }
    assert_eq!(score(client, 5).await.unwrap(), 6);
    let s = stats.stats();
    assert_eq!(s.batch_size.max, 8.0, "{:?}", s.batch_size);
    assert_eq!(s.rejected.deadline_exceeded, 1);
    server.abort();
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
