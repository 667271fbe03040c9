//! One version's node group at the front: its client behind a bounded
//! cold-start queue, its answers tagged with the version.
//!
//! While the version has a node serving, a request goes straight to its
//! balancer. Without one (scaled to zero, every node ejected or still
//! starting), the request waits in a queue bounded in **count**
//! (`queue`: beyond it, [`NoNode`] at once) and in **time** (`timeout`:
//! [`NoNode`] when it ends), and the version's `wake` hook runs (the
//! front's scaler asks for one node). Both answers become 503 with
//! `Retry-After` at the front. The waiting count is part of the
//! autoscaler's signal ([`ColdStart::waiting`]), and on the front's
//! `/metrics`: [`WAITING`] and [`NO_NODE`] (labels `deployment`,
//! `version`; `reason` = `queue_full` or `timeout`).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::HeaderValue;
use tokio::time::Instant;
use tower::{BoxError, Service};

use crate::http::VERSION_HEADER;

/// Gauge: requests waiting at the front for a first node of their version.
pub const WAITING: &str = "convoy_front_waiting_requests";
/// Counter: requests answered 503 for want of a node (`reason`:
/// `queue_full` or `timeout`).
pub const NO_NODE: &str = "convoy_front_no_node_total";

/// A request that found no node of its version: the queue was full, or no
/// node became ready within the bound.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoNode {
    /// The version.
    pub version: String,
    /// `true`: refused at once (the queue was full); `false`: waited
    /// `waited` in vain.
    pub queue_full: bool,
    /// How long it waited.
    pub waited: Duration,
}

impl fmt::Display for NoNode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.queue_full {
            write!(
                f,
                "no ready node: version {} has none and its cold-start queue is full",
                self.version
            )
        } else {
            write!(
                f,
                "no ready node: none of version {} became ready within {:?}",
                self.version, self.waited
            )
        }
    }
}

impl std::error::Error for NoNode {}

/// A node's 5xx answer, carried as an error through the split so that its
/// statistics (and a rollout's analysis) count it as a failure of its
/// version; the front still sends the answer itself to the caller
/// ([`NodeFailed::take`]).
pub struct NodeFailed<B> {
    status: http::StatusCode,
    answer: parking_lot::Mutex<Option<http::Response<B>>>,
}

impl<B> NodeFailed<B> {
    /// The node's answer (once).
    pub fn take(&self) -> Option<http::Response<B>> {
        self.answer.lock().take()
    }
}

impl<B> fmt::Debug for NodeFailed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodeFailed")
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

impl<B> fmt::Display for NodeFailed<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "the node answered {}", self.status)
    }
}

impl<B> std::error::Error for NodeFailed<B> {}

type Ready = Box<dyn Fn() -> bool + Send + Sync>;
type Wake = Box<dyn Fn() + Send + Sync>;

/// The cold-start state of one version, shared by its clients.
pub struct ColdStart {
    version: String,
    header: HeaderValue,
    ready: Ready,
    wake: parking_lot::RwLock<Option<Wake>>,
    waiting: Arc<AtomicUsize>,
    queue: usize,
    timeout: Duration,
    waiting_gauge: metrics::Gauge,
    queue_full: metrics::Counter,
    timed_out: metrics::Counter,
}

impl fmt::Debug for ColdStart {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ColdStart")
            .field("version", &self.version)
            .field("waiting", &self.waiting)
            .field("queue", &self.queue)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// How often a waiting request looks for a ready node.
const POLL: Duration = Duration::from_millis(20);

impl ColdStart {
    /// Version `version` of `deployment`, ready while `ready` says so; at
    /// most `queue` requests wait, each at most `timeout`.
    pub fn new(
        deployment: &str,
        version: &str,
        ready: impl Fn() -> bool + Send + Sync + 'static,
        queue: usize,
        timeout: Duration,
    ) -> Result<Arc<Self>, BoxError> {
        Ok(Arc::new(Self {
            version: version.to_string(),
            header: HeaderValue::from_str(version)
                .map_err(|_| format!("version {version:?}: not a header value"))?,
            ready: Box::new(ready),
            wake: parking_lot::RwLock::new(None),
            waiting: Arc::new(AtomicUsize::new(0)),
            queue,
            timeout,
            waiting_gauge: metrics::gauge!(WAITING, "deployment" => deployment.to_string(), "version" => version.to_string()),
            queue_full: metrics::counter!(NO_NODE, "deployment" => deployment.to_string(), "version" => version.to_string(), "reason" => "queue_full"),
            timed_out: metrics::counter!(NO_NODE, "deployment" => deployment.to_string(), "version" => version.to_string(), "reason" => "timeout"),
        }))
    }

    /// Runs `wake` each time a request starts waiting (the scaler asks for
    /// a node).
    pub fn on_wait(&self, wake: impl Fn() + Send + Sync + 'static) {
        *self.wake.write() = Some(Box::new(wake));
    }

    /// Requests waiting now.
    pub fn waiting(&self) -> usize {
        self.waiting.load(Ordering::Relaxed)
    }

    /// The counter itself (for the autoscaler's signal).
    pub fn waiting_counter(&self) -> Arc<AtomicUsize> {
        self.waiting.clone()
    }

    /// Whether a node serves now.
    pub fn ready(&self) -> bool {
        (self.ready)()
    }

    /// Waits for a node: `Ok` once one serves, [`NoNode`] past a bound.
    async fn wait(&self) -> Result<(), NoNode> {
        let taken = self
            .waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.queue).then_some(n + 1)
            });
        if taken.is_err() {
            self.queue_full.increment(1);
            return Err(NoNode {
                version: self.version.clone(),
                queue_full: true,
                waited: Duration::ZERO,
            });
        }
        struct Leave<'a>(&'a AtomicUsize, &'a metrics::Gauge);
        impl Drop for Leave<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
                self.1.decrement(1.0);
            }
        }
        self.waiting_gauge.increment(1.0);
        let _leave = Leave(&self.waiting, &self.waiting_gauge);
        if let Some(wake) = &*self.wake.read() {
            wake();
        }
        let started = Instant::now();
        let deadline = started + self.timeout;
        loop {
            if self.ready() {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.timed_out.increment(1);
                return Err(NoNode {
                    version: self.version.clone(),
                    queue_full: false,
                    waited: started.elapsed(),
                });
            }
            tokio::time::sleep_until(deadline.min(Instant::now() + POLL)).await;
        }
    }
}

/// A version's client behind its [`ColdStart`]; answers carry
/// `x-convoy-version`, and a 5xx answer comes back as [`NodeFailed`].
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    cold: Arc<ColdStart>,
}

impl<S: Clone> Clone for Gated<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            cold: self.cold.clone(),
        }
    }
}

impl<S> Gated<S> {
    /// `inner` behind `cold`.
    pub fn new(inner: S, cold: Arc<ColdStart>) -> Self {
        Self { inner, cold }
    }
}

impl<S, Req, B> Service<Req> for Gated<S>
where
    S: Service<Req, Response = http::Response<B>, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send + 'static,
    Req: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<B>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<http::Response<B>, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let cold = self.cold.clone();
        // The instance made ready goes with the request; a clone stays.
        let fresh = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, fresh);
        Box::pin(async move {
            if !cold.ready() {
                cold.wait().await?;
            }
            let mut rsp = inner.call(req).await?;
            rsp.headers_mut()
                .insert(VERSION_HEADER, cold.header.clone());
            if rsp.status().is_server_error() {
                return Err(NodeFailed {
                    status: rsp.status(),
                    answer: parking_lot::Mutex::new(Some(rsp)),
                }
                .into());
            }
            Ok(rsp)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicBool;

    use tower::ServiceExt;

    use super::*;

    fn node() -> impl Service<
        (),
        Response = http::Response<()>,
        Error = BoxError,
        Future = futures::future::Ready<Result<http::Response<()>, BoxError>>,
    > + Clone
           + Send
           + 'static {
        tower::service_fn(|()| futures::future::ready(Ok::<_, BoxError>(http::Response::new(()))))
    }

    #[tokio::test(start_paused = true)]
    async fn requests_wait_for_a_node_bounded_in_count_and_time() {
        let up = Arc::new(AtomicBool::new(false));
        let woken = Arc::new(AtomicUsize::new(0));
        let cold = {
            let up = up.clone();
            ColdStart::new(
                "m",
                "2",
                move || up.load(Ordering::Relaxed),
                3,
                Duration::from_secs(5),
            )
            .unwrap()
        };
        {
            let woken = woken.clone();
            cold.on_wait(move || {
                woken.fetch_add(1, Ordering::Relaxed);
            });
        }
        let svc = Gated::new(node(), cold.clone());
        // Three wait (the queue's bound) and wake the scaler; the fourth
        // is refused at once.
        let waiting: Vec<_> = (0..3)
            .map(|_| tokio::spawn(svc.clone().oneshot(())))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(cold.waiting(), 3);
        assert_eq!(woken.load(Ordering::Relaxed), 3);
        let refused = svc.clone().oneshot(()).await.unwrap_err();
        let refused = refused.downcast_ref::<NoNode>().unwrap();
        assert!(refused.queue_full, "{refused}");
        // A node comes up after 2 s: the three are served, tagged.
        tokio::time::sleep(Duration::from_secs(2)).await;
        up.store(true, Ordering::Relaxed);
        for w in waiting {
            let rsp = w.await.unwrap().unwrap();
            assert_eq!(rsp.headers()[VERSION_HEADER], "2");
        }
        assert_eq!(cold.waiting(), 0);
        // Ready: straight through, no wake.
        svc.clone().oneshot(()).await.unwrap();
        assert_eq!(woken.load(Ordering::Relaxed), 3);
        // Gone again: a request waits its 5 s, then fails.
        up.store(false, Ordering::Relaxed);
        let started = Instant::now();
        let late = svc.clone().oneshot(()).await.unwrap_err();
        let late = late.downcast_ref::<NoNode>().unwrap();
        assert!(!late.queue_full);
        assert_eq!(started.elapsed(), Duration::from_secs(5));
        assert_eq!(cold.waiting(), 0);
    }
}
