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
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use parking_lot::Mutex;
use pin_project_lite::pin_project;
use tokio::time::Instant;
use tower::{Layer, Service};

use super::histogram::{self, AtomicHistogram, BUCKETS};
use super::{LoadSample, SignalSource};

/// Latencies are kept in microseconds, from 1 µs to one hour; longer ones
/// count as one hour.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// The counters requests update: atomics only, so the request path takes
/// no lock and requests never wait for each other or for the sampler.
struct Inner {
    epoch: Instant,
    in_flight: AtomicU64,
    /// Sum of the start times (µs since the observer's epoch) of the
    /// requests in flight, for their mean age (wrapping: exact as long as
    /// the true sum fits in 64 bits, i.e. for millions of requests in
    /// flight over years).
    start_sum_us: AtomicU64,
    arrivals: AtomicU64,
    completions: AtomicU64,
    cancelled: AtomicU64,
    latency_us: AtomicHistogram,
    /// The sampler's scratch buffer; only `sample` takes this lock.
    scratch: Mutex<Vec<u64>>,
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
/// Recording a request's start and finish is a few relaxed atomic
/// operations (counters and a log-linear latency histogram, within 0.8 %),
/// never a lock, so the observer adds no contention to a busy deployment.
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
        let i = &self.inner;
        f.debug_struct("LoadObserver")
            .field("in_flight", &i.in_flight.load(Ordering::Relaxed))
            .field("arrivals", &i.arrivals.load(Ordering::Relaxed))
            .field("completions", &i.completions.load(Ordering::Relaxed))
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
                in_flight: AtomicU64::new(0),
                start_sum_us: AtomicU64::new(0),
                arrivals: AtomicU64::new(0),
                completions: AtomicU64::new(0),
                cancelled: AtomicU64::new(0),
                latency_us: AtomicHistogram::new(),
                scratch: Mutex::new(vec![0; BUCKETS]),
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
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// Response futures dropped before completing, since the start.
    pub fn cancelled(&self) -> u64 {
        self.inner.cancelled.load(Ordering::Relaxed)
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.inner.epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    fn start(&self) -> u64 {
        let now = self.now_us();
        let i = &self.inner;
        i.start_sum_us.fetch_add(now, Ordering::Relaxed);
        i.arrivals.fetch_add(1, Ordering::Relaxed);
        i.in_flight.fetch_add(1, Ordering::Relaxed);
        now
    }

    fn finish(&self, started_us: u64, completed: bool) {
        let now = self.now_us();
        let i = &self.inner;
        // Every finish pairs with one start, so neither goes below zero.
        i.in_flight.fetch_sub(1, Ordering::Relaxed);
        i.start_sum_us.fetch_sub(started_us, Ordering::Relaxed);
        if completed {
            i.latency_us
                .record(now.saturating_sub(started_us).clamp(1, MAX_LATENCY_US));
            i.completions.fetch_add(1, Ordering::Relaxed);
        } else {
            i.cancelled.fetch_add(1, Ordering::Relaxed);
        }
    }
}

impl SignalSource for LoadObserver {
    fn sample(&mut self, _now: Duration) -> Option<LoadSample> {
        let now = self.now_us();
        let i = &*self.inner;
        let mut counts = i.scratch.lock();
        counts.fill(0);
        i.latency_us.drain_into(&mut counts);
        let arrivals = i.arrivals.swap(0, Ordering::Relaxed);
        let completions = i.completions.swap(0, Ordering::Relaxed);
        let in_flight = i.in_flight.load(Ordering::Relaxed);
        if in_flight > 0 && in_flight < 1 << 48 {
            // Read apart from the count, the sum may be a request off; the
            // mean age is then clamped into range.
            let mean_start = i.start_sum_us.load(Ordering::Relaxed) / in_flight;
            let age = now.saturating_sub(mean_start).clamp(1, MAX_LATENCY_US);
            // One entry per request in flight, at their mean age so far.
            counts[histogram::bucket_of(age)] += in_flight;
        }
        let quantile = |q: f64| histogram::quantile(&counts, q).map(Duration::from_micros);
        Some(LoadSample {
            ongoing: in_flight as f64,
            queued: 0.0,
            running: in_flight as f64,
            arrivals,
            completions,
            latency_p50: quantile(0.5),
            latency_p90: quantile(0.9),
            latency_p99: quantile(0.99),
            ..LoadSample::default()
        })
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_record_while_the_sampler_holds_its_lock() {
        let observer = LoadObserver::new();
        let scratch = observer.inner.scratch.lock();
        let (tx, rx) = std::sync::mpsc::channel();
        let recorder = observer.clone();
        let thread = std::thread::spawn(move || {
            for _ in 0..1_000 {
                let started = recorder.start();
                recorder.finish(started, true);
            }
            tx.send(()).expect("the test waits");
        });
        // A request path that took a lock would wait here until the timeout.
        let done = rx.recv_timeout(Duration::from_secs(30));
        drop(scratch);
        thread.join().expect("no panic");
        assert!(done.is_ok(), "start/finish blocked on the sampler's lock");
        let s = observer.clone().sample(Duration::ZERO).unwrap();
        assert_eq!((s.arrivals, s.completions, s.ongoing), (1_000, 1_000, 0.0));
    }

    #[test]
    fn concurrent_requests_and_samples_lose_no_count() {
        let observer = LoadObserver::new();
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let o = observer.clone();
                std::thread::spawn(move || {
                    for _ in 0..20_000 {
                        let started = o.start();
                        o.finish(started, true);
                    }
                })
            })
            .collect();
        let mut sampler = observer.clone();
        let (mut arrivals, mut completions) = (0, 0);
        while !threads.iter().all(|t| t.is_finished()) {
            let s = sampler.sample(Duration::ZERO).unwrap();
            arrivals += s.arrivals;
            completions += s.completions;
        }
        for t in threads {
            t.join().expect("no panic");
        }
        let s = sampler.sample(Duration::ZERO).unwrap();
        assert_eq!(
            (arrivals + s.arrivals, completions + s.completions),
            (80_000, 80_000)
        );
        assert_eq!((observer.in_flight(), s.ongoing), (0, 0.0));
    }
}
