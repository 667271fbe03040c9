//! Measuring what users feel at a deployment's front door.
//!
//! [`LoadObserver`] is a [`SignalSource`] fed by [`ObserveLayer`]: put the
//! layer in front of a deployment (before the balancer, after any routing),
//! and every request's arrival, completion and end-to-end latency is
//! recorded. Each sample reports the requests in flight, the arrivals and
//! completions since the previous sample, and latency quantiles of that
//! interval, so [`LatencySlo`](crate::LatencySlo) scales on the p99 the
//! callers saw, not on a proxy for it.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hdrhistogram::Histogram;
use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::{LoadSample, SignalSource};

/// Latencies are kept in microseconds, from 1 µs to one hour, at two
/// significant digits (1 % precision); longer ones count as one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

struct State {
    in_flight: u64,
    /// Sum of the start times (µs since the observer's epoch) of the
    /// requests in flight, for their mean age.
    start_sum_us: u128,
    arrivals: u64,
    completions: u64,
    cancelled: u64,
    latency_us: Histogram<u64>,
}

struct Inner {
    epoch: Instant,
    state: Mutex<State>,
}

/// Requests in flight, arrivals, completions and latency quantiles of a
/// deployment, as seen by its callers.
///
/// Clones share the same counters. Requests enter through an
/// [`ObserveLayer`] (see [`LoadObserver::layer`]); the observer is the
/// [`SignalSource`] to hand to the [`Autoscaler`](crate::Autoscaler).
///
/// A sample's latency quantiles cover the requests completed since the
/// previous sample, **plus the requests still in flight, counted at their
/// mean age so far**: when a deployment stalls and nothing completes, the
/// quantiles still grow with the wait instead of going silent (a lower
/// bound on what those requests will see). With nothing completed and
/// nothing in flight the quantiles are `None`. A caller that drops its
/// response future leaves the in-flight count without a latency sample
/// (counted by [`LoadObserver::cancelled`]).
///
/// At the front door the observer cannot tell queued from running
/// requests: `ongoing` and `running` both carry the in-flight count and
/// `queued` is 0. For the queue and batch statistics behind it, pair the
/// observer with the replicas' batchers in a [`Layered`] source.
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale::{LoadObserver, SignalSource};
/// use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread", start_paused = true)]
/// # async fn main() -> Result<(), BoxError> {
/// let observer = LoadObserver::new();
/// let deployment = ServiceBuilder::new()
///     .layer(observer.layer())
///     .service(service_fn(|x: u32| async move {
///         tokio::time::sleep(Duration::from_millis(20)).await;
///         Ok::<_, BoxError>(x)
///     }));
/// deployment.oneshot(7).await?;
/// let sample = observer.clone().sample(Duration::ZERO).expect("always a sample");
/// assert_eq!((sample.arrivals, sample.completions), (1, 1));
/// let p99 = sample.latency_p99.expect("one request completed");
/// assert!(p99 >= Duration::from_millis(19) && p99 <= Duration::from_millis(21));
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct LoadObserver {
    inner: Arc<Inner>,
}

impl fmt::Debug for LoadObserver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.inner.state.lock();
        f.debug_struct("LoadObserver")
            .field("in_flight", &st.in_flight)
            .field("arrivals", &st.arrivals)
            .field("completions", &st.completions)
            .finish_non_exhaustive()
    }
}

impl Default for LoadObserver {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadObserver {
    /// An observer with nothing recorded.
    pub fn new() -> Self {
        Self {
            inner: Arc::new(Inner {
                epoch: Instant::now(),
                state: Mutex::new(State {
                    in_flight: 0,
                    start_sum_us: 0,
                    arrivals: 0,
                    completions: 0,
                    cancelled: 0,
                    latency_us: Histogram::new_with_bounds(1, MAX_LATENCY_US, 2)
                        .expect("static histogram bounds are valid"),
                }),
            }),
        }
    }

    /// The layer that records requests into this observer.
    pub fn layer(&self) -> ObserveLayer {
        ObserveLayer {
            observer: self.clone(),
        }
    }

    /// Requests in flight now.
    pub fn in_flight(&self) -> u64 {
        self.inner.state.lock().in_flight
    }

    /// Response futures dropped before completing, since the start.
    pub fn cancelled(&self) -> u64 {
        self.inner.state.lock().cancelled
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn start(&self) -> u64 {
        let now = self.now_us();
        let mut st = self.inner.state.lock();
        st.in_flight += 1;
        st.arrivals = st.arrivals.saturating_add(1);
        st.start_sum_us += u128::from(now);
        now
    }

    fn finish(&self, started_us: u64, completed: bool) {
        let now = self.now_us();
        let mut st = self.inner.state.lock();
        // Never underflows: every finish pairs with one start.
        st.in_flight = st.in_flight.saturating_sub(1);
        st.start_sum_us = st.start_sum_us.saturating_sub(u128::from(started_us));
        if completed {
            st.completions = st.completions.saturating_add(1);
            let latency = now.saturating_sub(started_us).clamp(1, MAX_LATENCY_US);
            st.latency_us.saturating_record(latency);
        } else {
            st.cancelled = st.cancelled.saturating_add(1);
        }
    }
}

impl SignalSource for LoadObserver {
    fn sample(&mut self, _now: Duration) -> Option<LoadSample> {
        let now = u128::from(self.now_us());
        let mut guard = self.inner.state.lock();
        let st = &mut *guard;
        if st.in_flight > 0 {
            let mean_start = st.start_sum_us / u128::from(st.in_flight);
            let age = u64::try_from(now.saturating_sub(mean_start)).unwrap_or(u64::MAX);
            let age = age.clamp(1, MAX_LATENCY_US);
            // One entry per request in flight, at their mean age so far.
            let _ = st.latency_us.record_n(age, st.in_flight);
        }
        let quantile = |h: &Histogram<u64>, q: f64| {
            (!h.is_empty()).then(|| Duration::from_micros(h.value_at_quantile(q)))
        };
        let sample = LoadSample {
            ongoing: st.in_flight as f64,
            queued: 0.0,
            running: st.in_flight as f64,
            arrivals: std::mem::take(&mut st.arrivals),
            completions: std::mem::take(&mut st.completions),
            latency_p50: quantile(&st.latency_us, 0.5),
            latency_p90: quantile(&st.latency_us, 0.9),
            latency_p99: quantile(&st.latency_us, 0.99),
            ..LoadSample::default()
        };
        st.latency_us.reset();
        Some(sample)
    }
}

/// Records every request through the wrapped service into a
/// [`LoadObserver`]. Made by [`LoadObserver::layer`].
#[derive(Clone, Debug)]
pub struct ObserveLayer {
    observer: LoadObserver,
}

impl<S> Layer<S> for ObserveLayer {
    type Service = Observe<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Observe {
            inner,
            observer: self.observer.clone(),
        }
    }
}

/// A service whose requests are recorded by a [`LoadObserver`].
#[derive(Clone, Debug)]
pub struct Observe<S> {
    inner: S,
    observer: LoadObserver,
}

impl<S> Observe<S> {
    /// The wrapped service.
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

impl<S, Req> Service<Req> for Observe<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ObserveFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        // Started before the inner call, so time spent in `call` counts.
        let started_us = self.observer.start();
        let guard = InFlight {
            observer: self.observer.clone(),
            started_us,
            done: false,
        };
        ObserveFuture {
            inner: self.inner.call(req),
            guard,
        }
    }
}

/// Ends a request's in-flight span exactly once: on completion or on drop.
struct InFlight {
    observer: LoadObserver,
    started_us: u64,
    done: bool,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if !self.done {
            self.observer.finish(self.started_us, false);
        }
    }
}

pin_project! {
    /// Response future of [`Observe`].
    pub struct ObserveFuture<F> {
        #[pin]
        inner: F,
        guard: InFlight,
    }
}

impl<F> fmt::Debug for ObserveFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObserveFuture").finish_non_exhaustive()
    }
}

impl<F, T, E> Future for ObserveFuture<F>
where
    F: Future<Output = Result<T, E>>,
{
    type Output = Result<T, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let out = std::task::ready!(this.inner.poll(cx));
        if !this.guard.done {
            this.guard.done = true;
            // Errors are latency users felt too.
            this.guard.observer.finish(this.guard.started_us, true);
        }
        Poll::Ready(out)
    }
}

/// Two sources as one: what callers feel from `front` (requests in flight,
/// arrivals, completions, latency quantiles), what happens behind it from
/// `behind` (queue depth, queue wait, batch statistics, replicas reporting).
///
/// The usual pair is a [`LoadObserver`] in front of a deployment and a
/// `BatcherSet` of its replicas' batchers (feature `batcher`), so that
/// [`LatencySlo`](crate::LatencySlo) sees the p99 callers felt and
/// [`QueueModel`](crate::QueueModel) the batch cost curve, without counting
/// a request twice. `running` is the front's in-flight count less the
/// queue behind it. When one side has no sample, the other's is used alone.
#[derive(Debug, Clone)]
pub struct Layered<F, B> {
    front: F,
    behind: B,
}

impl<F, B> Layered<F, B> {
    /// Combines `front` and `behind`.
    pub fn new(front: F, behind: B) -> Self {
        Self { front, behind }
    }
}

impl<F: SignalSource, B: SignalSource> SignalSource for Layered<F, B> {
    fn sample(&mut self, now: Duration) -> Option<LoadSample> {
        let front = self.front.sample(now);
        let behind = self.behind.sample(now);
        match (front, behind) {
            (Some(f), Some(b)) => {
                let queued = b.queued.min(f.ongoing);
                Some(LoadSample {
                    queued,
                    running: f.ongoing - queued,
                    queue_wait: b.queue_wait,
                    batches: b.batches,
                    batch_items: b.batch_items,
                    batch_busy: b.batch_busy,
                    replicas_reporting: b.replicas_reporting,
                    ..f
                })
            }
            (f, b) => f.or(b),
        }
    }
}
