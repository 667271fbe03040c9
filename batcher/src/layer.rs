//! The tower `Layer` and the closure form.

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::sync::Arc;

use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::config::BatchConfig;
use crate::limit::SizeLimitConfig;
use crate::results::IntoItemResults;
use crate::service::Batch;
use crate::shared::{Hooks, Shared};
use crate::worker::Worker;
use crate::Priority;

/// Wraps a batch service (`Service<Vec<Req>>`) into a request-level
/// [`Batch<Req, Resp>`].
///
/// [`layer`](Layer::layer) spawns the batcher's [`Worker`] on the current
/// tokio runtime, so it must be called from within one (it panics
/// otherwise, like `tower::buffer`); use [`pair`](Self::pair) to spawn the
/// worker yourself.
///
/// Per-request behaviour is set with functions of the request:
/// [`key_fn`](Self::key_fn) (which requests may share a batch),
/// [`cost_fn`](Self::cost_fn) (for `max_batch_cost`),
/// [`priority_fn`](Self::priority_fn) and [`deadline_fn`](Self::deadline_fn).
/// For `http::Request`s they can read the request's extensions or headers,
/// so a handler or a middleware can attach a deadline or a priority.
pub struct BatchLayer<Req, Resp> {
    config: BatchConfig,
    hooks: Hooks<Req>,
    _resp: PhantomData<fn() -> Resp>,
}

impl<Req, Resp> BatchLayer<Req, Resp> {
    /// A layer with the given (already validated) configuration.
    pub fn new(config: BatchConfig) -> Self {
        Self {
            config,
            hooks: Hooks::default(),
            _resp: PhantomData,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &BatchConfig {
        &self.config
    }

    /// Only requests with equal keys share a batch (model id, shape bucket,
    /// sequence-length bucket...). Keys are served round-robin at equal
    /// priority, so none starves. Without it every request has key 0.
    ///
    /// The key is a `u64` bucket id; map names to ids (for example the
    /// index of the model in your model table) rather than hashing them if
    /// two names must never share a batch.
    pub fn key_fn(mut self, f: impl Fn(&Req) -> u64 + Send + Sync + 'static) -> Self {
        self.hooks.key = Some(Arc::new(f));
        self
    }

    /// The cost of a request (tokens, pixels) counted against
    /// `max_batch_cost`. Without it every request costs 1.
    pub fn cost_fn(mut self, f: impl Fn(&Req) -> u64 + Send + Sync + 'static) -> Self {
        self.hooks.cost = Some(Arc::new(f));
        self
    }

    /// The priority of a request: higher priorities are dispatched first.
    /// Without it every request is [`Priority::Normal`].
    pub fn priority_fn(mut self, f: impl Fn(&Req) -> Priority + Send + Sync + 'static) -> Self {
        self.hooks.priority = Some(Arc::new(f));
        self
    }

    /// The deadline of a request. A request still queued at its deadline
    /// is answered [`DeadlineExceeded`](crate::DeadlineExceeded) and never
    /// reaches the batch service. Combined with `queue_timeout`, the
    /// earlier one wins.
    pub fn deadline_fn(
        mut self,
        f: impl Fn(&Req) -> Option<Instant> + Send + Sync + 'static,
    ) -> Self {
        self.hooks.deadline = Some(Arc::new(f));
        self
    }

    /// Lets the batcher isolate failures: when the batch service fails a
    /// whole batch (an error, a panic, a wrong number of results), the
    /// batch is split in halves that run again, halving what still fails,
    /// so only the requests that fail on their own get the error and every
    /// other caller gets its answer. Per-item errors are never retried.
    ///
    /// Sending a request again needs a copy of it, so the batcher keeps a
    /// clone of each request of a running batch of two or more (for large
    /// inputs, share them behind an `Arc` to make that clone cheap). The
    /// configuration's
    /// [`failure_isolation`](crate::BatchConfigBuilder::failure_isolation)
    /// (on by default) and
    /// [`max_isolation_passes`](crate::BatchConfigBuilder::max_isolation_passes)
    /// decide whether and how far a failed batch is split; without this
    /// call a failed batch fails all of its items.
    pub fn isolate_failures(mut self) -> Self
    where
        Req: Clone + 'static,
    {
        self.hooks.copy = Some(Arc::new(Req::clone));
        self
    }

    /// Learns the largest batch the batch service can run, for a service
    /// that fails batches for being too large (a memory quota, out of
    /// memory): `too_large` says which errors mean that (it sees each error
    /// of the failure's source chain, the batch service's own first).
    ///
    /// When a batch of `n` fails with such an error, batches are formed
    /// with at most the largest size known to fit below `n` (or `n / 2`,
    /// the halves failure isolation runs next) from then on, so a later
    /// burst is not first tried at a size that failed. After
    /// [`probe_after`](SizeLimitConfig::probe_after) with a success at the
    /// limit and no such failure, the limit is raised halfway to the
    /// smallest size that failed (a binary search, one step per period;
    /// once converged, halfway to `max_batch_size`), so it follows what
    /// fits when that changes. A batch of one that fails so leaves the
    /// limit alone. The limit is in [`BatchStats::size_limit`](crate::BatchStats::size_limit),
    /// [`BatchHandle::batch_size_cap`](crate::BatchHandle::batch_size_cap)
    /// and the `convoy_batcher_size_limit` gauge.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use convoy_batcher::{BatchConfig, BatchLayer, SizeLimitConfig};
    /// use tower::Layer;
    ///
    /// #[derive(Debug)]
    /// struct OutOfMemory;
    /// impl std::fmt::Display for OutOfMemory {
    ///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
    ///         f.write_str("out of memory")
    ///     }
    /// }
    /// impl std::error::Error for OutOfMemory {}
    ///
    /// let layer = BatchLayer::<u32, u32>::new(BatchConfig::default())
    ///     .isolate_failures()
    ///     .size_limit(SizeLimitConfig::default(), |e| e.is::<OutOfMemory>());
    /// let service = layer.layer(tower::service_fn(|xs: Vec<u32>| async move {
    ///     if xs.len() > 8 {
    ///         Err(OutOfMemory)
    ///     } else {
    ///         Ok(xs)
    ///     }
    /// }));
    /// # drop(service);
    /// # }
    /// ```
    pub fn size_limit(
        mut self,
        config: SizeLimitConfig,
        too_large: impl Fn(&(dyn std::error::Error + 'static)) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.hooks.size_limit = Some((config, Arc::new(too_large)));
        self
    }

    /// Builds the request service and its worker without spawning the
    /// worker: run the [`Worker`] future on the executor of your choice.
    pub fn pair<S>(&self, service: S) -> (Batch<Req, Resp>, Worker<S, Req, Resp>)
    where
        S: Service<Vec<Req>>,
        S::Error: Into<BoxError>,
        S::Response: IntoItemResults<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        let shared = Arc::new(Shared::new(&self.config, self.hooks.clone()));
        let worker = Worker::new(
            shared.clone(),
            service,
            self.config.max_concurrent_batches,
            self.config.max_batch_cost,
            self.config
                .isolation_passes
                .filter(|_| self.hooks.copy.is_some()),
        );
        (Batch::new(shared, self.config.overflow), worker)
    }
}

impl<Req, Resp> Clone for BatchLayer<Req, Resp> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            hooks: self.hooks.clone(),
            _resp: PhantomData,
        }
    }
}

impl<Req, Resp> fmt::Debug for BatchLayer<Req, Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .field("hooks", &self.hooks)
            .finish()
    }
}

impl<S, Req, Resp> Layer<S> for BatchLayer<Req, Resp>
where
    S: Service<Vec<Req>> + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    S::Response: IntoItemResults<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Service = Batch<Req, Resp>;

    fn layer(&self, service: S) -> Batch<Req, Resp> {
        let (batch, worker) = self.pair(service);
        tokio::spawn(worker);
        batch
    }
}

/// A batcher around an async closure that handles a whole batch.
///
/// The closure gets the batch's requests and returns one result per
/// request (`Vec<Resp>` or `Vec<Result<Resp, E>>`), or an error that fails
/// the whole batch. Must be called within a tokio runtime.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// use convoy_batcher::{batch_fn, BatchConfig};
/// use tower::ServiceExt;
///
/// let config = BatchConfig::builder().max_batch_size(16).build()?;
/// let square = batch_fn(config, |xs: Vec<u64>| async move {
///     Ok::<_, std::convert::Infallible>(xs.into_iter().map(|x| x * x).collect::<Vec<u64>>())
/// });
/// assert_eq!(square.oneshot(7).await?, 49);
/// # Ok(())
/// # }
/// ```
pub fn batch_fn<Req, Resp, F, Fut, R, E>(config: BatchConfig, f: F) -> Batch<Req, Resp>
where
    F: FnMut(Vec<Req>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<R, E>> + Send + 'static,
    R: IntoItemResults<Resp>,
    E: Into<BoxError>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    BatchLayer::new(config).layer(tower::service_fn(f))
}
