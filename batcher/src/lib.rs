//! Dynamic batching for tower: turn a service that handles a *batch* of
//! requests into a service that handles *one* request, grouping concurrent
//! requests into batches.
//!
//! Serving a model one request at a time wastes the hardware; one forward
//! pass over N inputs costs far less than N passes. [`BatchLayer`] wraps a
//! batch service (`Service<Vec<Req>>` answering one result per item) into a
//! cloneable [`Batch<Req, Resp>`]: `Service<Req, Response = Resp, Error =
//! BoxError>` that composes with `ServiceBuilder`, axum and tonic.
//!
//! # Example: a batched model behind an axum route
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//!
//! use axum::{body::Body, extract::State, http::{Request, StatusCode}, routing::post, Json, Router};
//! use convoy_batcher::{Batch, BatchConfig, BatchLayer, DeadlineExceeded, QueueFull};
//! use tower::{service_fn, BoxError, Layer, ServiceBuilder, ServiceExt};
//!
//! /// The "model": one call scores a whole batch.
//! async fn score_batch(inputs: Vec<f32>) -> Result<Vec<f32>, Infallible> {
//!     Ok(inputs.iter().map(|x| x * 2.0).collect())
//! }
//!
//! type Model = tower::load_shed::LoadShed<tower::timeout::Timeout<Batch<f32, f32>>>;
//!
//! async fn infer(State(model): State<Model>, Json(x): Json<f32>) -> Result<Json<f32>, StatusCode> {
//!     model.oneshot(x).await.map(Json).map_err(|e: BoxError| {
//!         if e.is::<QueueFull>() || e.is::<tower::load_shed::error::Overloaded>() {
//!             StatusCode::SERVICE_UNAVAILABLE
//!         } else if e.is::<DeadlineExceeded>() || e.is::<tower::timeout::error::Elapsed>() {
//!             StatusCode::GATEWAY_TIMEOUT
//!         } else {
//!             StatusCode::INTERNAL_SERVER_ERROR
//!         }
//!     })
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), BoxError> {
//! let config = BatchConfig::builder()
//!     .name("doubler")
//!     .max_batch_size(32)
//!     .queue_capacity(1024)
//!     .queue_timeout(Duration::from_millis(100))
//!     .build()?;
//! let batched = BatchLayer::new(config).layer(service_fn(score_batch));
//! let control = batched.handle(); // live settings, close(), stats()
//! let model: Model = ServiceBuilder::new()
//!     .load_shed() // a full queue answers at once instead of waiting
//!     .timeout(Duration::from_secs(1))
//!     .service(batched);
//!
//! let app = Router::new().route("/infer", post(infer)).with_state(model);
//! let response = app
//!     .oneshot(Request::post("/infer").header("content-type", "application/json").body(Body::from("21"))?)
//!     .await?;
//! assert_eq!(response.status(), StatusCode::OK);
//! assert_eq!(control.stats().completed_total, 1);
//! # Ok(())
//! # }
//! ```
//!
//! [`batch_fn`] is the short form for a closure: `batch_fn(config, |items:
//! Vec<Req>| async move { ... })`.
//!
//! # How batches form
//!
//! - **Batch when busy.** Whenever the batch service has a free slot
//!   (`poll_ready` is ready and fewer than `max_concurrent_batches` batches
//!   run), the worker takes up to `max_batch_size` queued items at once.
//!   While every slot is busy the queue keeps growing, so batches fill
//!   exactly when load is high, and a lone request at low load goes out at
//!   once with no timer.
//! - **`max_wait`** (default 0), measured from the *oldest* queued item,
//!   trades latency for fuller batches; **`preferred_batch_sizes`** dispatch
//!   the largest preferred size the queue can fill until the oldest item's
//!   wait runs out.
//! - **Waiting for the callers just answered** ([`WaitFor::RecentLoad`]):
//!   within `max_wait`, a batch waits only until the batcher holds as many
//!   callers (queued or running) as it held at once lately. N callers that
//!   each send again when answered then share batches of N, where
//!   dispatching at once splits them into two halves that take turns (one
//!   forms while the other runs); a lone caller, all the load there was,
//!   never waits.
//! - **Cost cap:** with [`BatchLayer::cost_fn`] and `max_batch_cost`, a
//!   batch also stops at a total cost (tokens, pixels). An item costing more
//!   than the cap alone goes in a batch of its own.
//! - **Keys:** with [`BatchLayer::key_fn`] only requests with equal keys share
//!   a batch (model id, shape or sequence-length bucket); keys are served
//!   round-robin at equal priority so none starves (a higher priority is
//!   always served first, whatever its key).
//! - **Priorities:** [`BatchLayer::priority_fn`] gives each request a
//!   [`Priority`]; higher priorities dispatch first, FIFO within a
//!   priority and key.
//! - **Deadlines:** [`BatchLayer::deadline_fn`] and `queue_timeout` give each
//!   request a deadline. A request still queued at its deadline is answered
//!   [`DeadlineExceeded`] (within about a millisecond) and never reaches the
//!   batch service.
//! - **Cancellation:** a caller that drops its future has its item skipped
//!   before dispatch; the batch service is only reserved (`poll_ready`) for
//!   a batch that has live items to send.
//! - **Adaptive size** (opt-in,
//!   [`BatchConfigBuilder::adaptive_batch_size`]): batches stay at the size
//!   where measured throughput is best; see below.
//!
//! Per-request functions rather than wrapper types keep the request type
//! your own: for `http::Request` they can read extensions or headers (a
//! deadline from `grpc-timeout`, a priority from a tenant header).
//!
//! # Adaptive batch size
//!
//! Batching does not pay on every model and machine: on a 2-core CPU a
//! traced ResNet-50 runs 10.0 images/s at batch 1, 8.7 at batch 8 and 6.6 at
//! batch 32, while a MiniLM encoder gains 3.6x from batching, so a fixed
//! `max_batch_size` is wrong for some model on some hardware. With
//! [`adaptive_batch_size(true)`](BatchConfigBuilder::adaptive_batch_size)
//! the worker groups batch sizes in power-of-two buckets, keeps the mean
//! service time per item of each (running mean, then EWMA) and moves a cap
//! below `max_batch_size` to the bucket with the most items per second:
//!
//! - it starts at `max_batch_size`; after
//!   [`min_samples`](AdaptiveConfig::min_samples) batches it probes a
//!   neighbouring bucket (the cap moves there for up to `4 × min_samples`
//!   batches and the bucket is measured afresh; a probe whose first two
//!   batches are over twice as slow per item ends at once);
//! - it moves when the neighbour is better (a larger bucket must be
//!   [`margin_percent`](AdaptiveConfig::margin_percent) better, since it
//!   costs latency) and then probes on in the same direction;
//! - settled, it probes again every
//!   [`explore_every`](AdaptiveConfig::explore_every) batches, alternately
//!   up and down; a settled bucket that becomes 1.5x slower per item is
//!   measured afresh and probing restarts at once, so a cost curve that
//!   changes is followed.
//!
//! The work is done once per finished batch, never per request. The chosen
//! cap is in [`BatchHandle::batch_size_cap`], [`BatchStats::batch_size_cap`]
//! and the `convoy_batcher_batch_size_cap` gauge.
//!
//! # Failure isolation
//!
//! One forward pass serves the whole batch, so when the batch service fails
//! (an error for the batch, a panic, a wrong number of results) every
//! request in it fails, whichever one caused it: one client's bad input
//! becomes the error of everyone it was batched with. Triton, Ray Serve and
//! TorchServe answer that way. With
//! [`BatchLayer::isolate_failures`] the batcher instead splits the failed
//! batch in two halves and runs each again; a half that fails again is
//! split again, and so on. A request that fails on its own ends up alone,
//! and only its caller gets the error ([`BatchFailed`] or
//! [`BatchPanicked`], as before); every other caller gets its own answer.
//! Per-item errors (a `Vec<Result<Resp, E>>` response) are answers: they
//! reach their own caller unchanged and are never retried.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), tower::BoxError> {
//! use convoy_batcher::{BatchConfig, BatchFailed, BatchLayer};
//! use tower::{service_fn, Layer, ServiceExt};
//!
//! // A model whose forward pass fails for the whole batch on a bad input.
//! let model = service_fn(|xs: Vec<i64>| async move {
//!     if xs.iter().any(|&x| x < 0) {
//!         return Err("negative input");
//!     }
//!     Ok(xs.iter().map(|x| x * 2).collect::<Vec<i64>>())
//! });
//! let config = BatchConfig::builder().max_batch_size(8).build()?; // isolation is on by default
//! let svc = BatchLayer::<i64, i64>::new(config).isolate_failures().layer(model);
//! let results = futures::future::join_all([4, -1, 5].map(|x| svc.clone().oneshot(x))).await;
//! assert_eq!(results[0].as_ref().unwrap(), &8);
//! assert!(results[1].as_ref().unwrap_err().is::<BatchFailed>());
//! assert_eq!(results[2].as_ref().unwrap(), &10);
//! # Ok(())
//! # }
//! ```
//!
//! **Cost.** A batch that does not fail costs nothing more than one clone
//! of each of its requests, kept while it runs (a batch of one is not
//! copied; share large inputs behind an `Arc` to make the clone cheap).
//! A failed batch costs extra *passes*: each pass runs again, in halves,
//! every part of the batch that still fails. Singling out the poisonous
//! requests of a batch of `n` takes at most `⌈log2 n⌉` passes, each
//! re-running at most the batch's `n` items in batches half as large as in
//! the pass before. For one poisonous request in a batch of 32: 5 passes,
//! 10 extra batches, 62 items run again (`2n − 2`). In the worst case,
//! every item failing (a broken model), it is 5 passes of all 32 items in
//! 62 extra batches. The callers of a failed batch wait for those passes;
//! parts of failed batches go out before newer requests.
//! [`max_isolation_passes`](BatchConfigBuilder::max_isolation_passes)
//! bounds the passes per failed batch (default 10, enough to single out
//! one request in batches of up to 1024); when they run out, the requests
//! of a part that still fails get its error.
//!
//! **Turning it off.** Leave out `isolate_failures()` (requests that are
//! not `Clone` cannot be sent again anyway), or keep it and set
//! [`failure_isolation(false)`](BatchConfigBuilder::failure_isolation) in
//! the configuration (`"failure_isolation": false` in serde) for the old
//! behaviour: a failed batch fails all of its callers.
//!
//! A caller that goes away while its batch is being split is not run
//! again, and one whose deadline passes meanwhile is answered
//! [`DeadlineExceeded`] at its deadline, as if it were still queued. The
//! counters [`BatchStats::isolation_passes_total`] and
//! [`BatchStats::isolated_failures_total`] (and their metrics) show what
//! isolation costs and finds.
//!
//! # Learned size limit
//!
//! A batch service may fail a batch for its size alone: a model past its
//! memory quota. Isolation splits such a batch and its halves succeed, but
//! the next burst would be tried at the full size and fail again. With
//! [`BatchLayer::size_limit`] and a function saying which errors mean "too
//! large", the worker learns the largest batch that fits: after a batch of
//! `n` fails so, batches are formed with at most the largest size known to
//! fit below `n` (or `n / 2`); after
//! [`probe_after`](SizeLimitConfig::probe_after) of success at the limit it
//! tries halfway to the smallest size that failed (a binary search, one
//! step per period), and once converged halfway to `max_batch_size`, so the
//! limit follows what fits when that changes. The limit is in
//! [`BatchStats::size_limit`] and the `convoy_batcher_size_limit` gauge.
//!
//! # Backpressure
//!
//! The queue is bounded by `queue_capacity`. Like `tower::buffer`, a slot
//! is reserved in `poll_ready` ([`OverflowPolicy::Backpressure`], the
//! default), so `load_shed`, `ConcurrencyLimit`, `timeout`, axum and tonic
//! see a not-ready service when the queue is full. With
//! [`OverflowPolicy::Reject`] `poll_ready` is always ready and a request that
//! finds the queue full gets [`QueueFull`] at once.
//!
//! # Errors
//!
//! Every request gets exactly one answer: its own result, or one of these
//! (boxed as `tower::BoxError`, matched with `err.is::<T>()`):
//! [`QueueFull`], [`DeadlineExceeded`], [`BatchFailed`] (the whole batch
//! failed, or the response had the wrong length; the cause is its
//! `source()`; with [failure isolation](#failure-isolation), the request
//! failed alone, or in a part of its batch the passes ran out on),
//! [`BatchPanicked`] (the batch service panicked: only that batch fails,
//! or with isolation only the requests that panic alone; the worker
//! carries on), [`Closed`] (the batcher was closed
//! or its worker ended: nobody hangs). If the batch service's `poll_ready`
//! fails, queued requests get [`BatchFailed`] with that error as the cause,
//! running batches still finish and answer their callers, and new requests
//! get [`Closed`]. Per-item errors from a
//! `Vec<Result<Resp, E>>` response reach only their own caller, unchanged.
//! Impossible configurations are a [`ConfigError`] when the configuration is
//! built.
//!
//! # Runtime control and statistics
//!
//! [`Batch::handle`] returns a [`BatchHandle`] to change `max_batch_size`,
//! `max_wait` and `queue_capacity` live, to [`close`](BatchHandle::close)
//! the batcher (stop admission, drain the queue), and to read
//! [`stats`](BatchHandle::stats): queue depth, in-flight batches, totals,
//! rejections by reason, recent batch-size and queue-wait distributions and
//! the service time per batch size (EWMA, plus an `a + b·n` fit), for
//! autoscalers and dashboards.
//!
//! # Metrics and tracing
//!
//! Through the [`metrics`](https://docs.rs/metrics) facade, each with a
//! `batcher` label carrying the configured name (see [`metric_names`]):
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `convoy_batcher_batch_size` | histogram | items per dispatched batch |
//! | `convoy_batcher_queue_wait_seconds` | histogram | admission to dispatch, per item (at most 16 evenly spaced items per batch) |
//! | `convoy_batcher_batch_service_seconds` | histogram | batch service time per batch |
//! | `convoy_batcher_queue_depth` | gauge | items queued |
//! | `convoy_batcher_in_flight_batches` | gauge | batches running |
//! | `convoy_batcher_rejected_total{reason}` | counter | `queue_full`, `deadline_exceeded`, `closed` |
//! | `convoy_batcher_cancelled_total` | counter | queued items whose caller went away |
//! | `convoy_batcher_batches_total{outcome}` | counter | `ok`, `failed`, `panicked` |
//! | `convoy_batcher_batch_size_cap` | gauge | the adaptive cap (only when it is on) |
//! | `convoy_batcher_size_limit` | gauge | the [learned size limit](#learned-size-limit) (only with one) |
//! | `convoy_batcher_too_large_batches_total` | counter | batches that failed as too large (only with a size limit) |
//! | `convoy_batcher_isolation_passes_total` | counter | extra passes over failed batches ([failure isolation](#failure-isolation)) |
//! | `convoy_batcher_isolated_failures_total` | counter | requests that failed alone after their batch was split |
//!
//! Metrics are recorded once per batch, not per item; handles are
//! registered again every second, so a recorder installed after the batcher
//! is picked up within a second.
//!
//! Each batch runs inside a `convoy_batch` span (fields `batcher`, `size`)
//! that `follows_from` the span of every caller in the batch, captured when
//! the caller called the service.
//!
//! # Runtime
//!
//! [`BatchLayer`] spawns one worker task per batcher with `tokio::spawn`, so
//! the layer must be applied inside a tokio runtime;
//! [`BatchLayer::pair`] returns the [`Worker`] future to run elsewhere.

mod adaptive;
mod config;
mod error;
mod future;
mod handle;
mod isolate;
mod layer;
mod limit;
mod queue;
mod results;
mod service;
mod shared;
mod stats;
mod telemetry;
mod worker;

pub use adaptive::AdaptiveConfig;
pub use config::{BatchConfig, BatchConfigBuilder, OverflowPolicy, WaitFor};
pub use error::{
    BatchFailed, BatchPanicked, Closed, ConfigError, ConfigErrorKind, DeadlineExceeded, QueueFull,
};
pub use future::ResponseFuture;
pub use handle::BatchHandle;
pub use layer::{batch_fn, BatchLayer};
pub use limit::SizeLimitConfig;
pub use results::IntoItemResults;
pub use service::Batch;
pub use stats::{
    BatchStats, Distribution, Rejections, ServiceTimeFit, SizeServiceTime, RECENT_SAMPLES,
};
pub use worker::Worker;

/// Names of the `metrics` emitted by every batcher; each carries a
/// `batcher` label with the configured name.
pub mod metric_names {
    pub use crate::telemetry::{
        BATCHES_TOTAL, BATCH_SERVICE_SECONDS, BATCH_SIZE, BATCH_SIZE_CAP, CANCELLED_TOTAL,
        IN_FLIGHT_BATCHES, ISOLATED_FAILURES_TOTAL, ISOLATION_PASSES_TOTAL, QUEUE_DEPTH,
        QUEUE_WAIT_SECONDS, REJECTED_TOTAL, SIZE_LIMIT, TOO_LARGE_BATCHES_TOTAL,
    };
}

/// Priority of a request; higher priorities are dispatched first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served after everything else (batch jobs, shadow traffic).
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Served first (interactive traffic).
    High = 2,
}
