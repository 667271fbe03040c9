//! Error types returned by the batcher.
//!
//! Every error that reaches a caller is boxed as [`tower::BoxError`]; match
//! them with `err.is::<QueueFull>()` or `err.downcast_ref::<BatchFailed>()`.
//! The structs are opaque on purpose so that new details can be added
//! without breaking callers.

use std::error::Error;
use std::fmt;
use std::sync::Arc;

/// The queue was at `queue_capacity` and the batcher is configured to reject
/// rather than wait ([`OverflowPolicy::Reject`](crate::OverflowPolicy::Reject)).
#[derive(Debug, Clone, Default)]
pub struct QueueFull {
    _p: (),
}

impl QueueFull {
    pub(crate) fn new() -> Self {
        Self { _p: () }
    }
}

impl fmt::Display for QueueFull {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batch queue is full")
    }
}

impl Error for QueueFull {}

/// The request's deadline (or the batcher's `queue_timeout`) passed while it
/// was queued, so it never reached the batch service; or, with
/// [failure isolation](crate#failure-isolation), while it waited to run
/// again after its batch failed.
#[derive(Debug, Clone, Default)]
pub struct DeadlineExceeded {
    _p: (),
}

impl DeadlineExceeded {
    pub(crate) fn new() -> Self {
        Self { _p: () }
    }
}

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("request deadline passed while queued for a batch")
    }
}

impl Error for DeadlineExceeded {}

/// The batcher no longer admits work: it was closed through
/// [`BatchHandle::close`](crate::BatchHandle::close), its worker ended, or
/// its runtime shut down.
#[derive(Debug, Clone, Default)]
pub struct Closed {
    _p: (),
}

impl Closed {
    pub(crate) fn new() -> Self {
        Self { _p: () }
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batcher is closed")
    }
}

impl Error for Closed {}

/// The batch this request was part of failed as a whole: the batch service
/// returned an error, or answered with the wrong number of results. With
/// [failure isolation](crate#failure-isolation) the request failed in a
/// batch of its own (or in a part of its batch when the passes ran out).
///
/// The underlying error is shared by every item of the batch and is
/// available through [`Error::source`].
#[derive(Debug, Clone)]
pub struct BatchFailed {
    source: Arc<dyn Error + Send + Sync>,
}

impl BatchFailed {
    pub(crate) fn new(source: Arc<dyn Error + Send + Sync>) -> Self {
        Self { source }
    }
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch failed: {}", self.source)
    }
}

impl Error for BatchFailed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// The batch service panicked (in `call` or in its future) while running
/// the batch this request was part of. Only that batch's items see this
/// error (with [failure isolation](crate#failure-isolation), only the items
/// that panic on their own); the worker keeps serving.
#[derive(Debug, Clone)]
pub struct BatchPanicked {
    message: Option<Arc<str>>,
}

impl BatchPanicked {
    pub(crate) fn from_payload(payload: &(dyn std::any::Any + Send)) -> Self {
        let message = if let Some(s) = payload.downcast_ref::<&'static str>() {
            Some(Arc::from(*s))
        } else {
            payload
                .downcast_ref::<String>()
                .map(|s| Arc::from(s.as_str()))
        };
        Self { message }
    }

    /// The panic message, when the panic carried a string.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

impl fmt::Display for BatchPanicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(m) => write!(f, "batch service panicked: {m}"),
            None => f.write_str("batch service panicked"),
        }
    }
}

impl Error for BatchPanicked {}

/// The batch service answered a batch of `expected` items with `actual`
/// results. Reported to the batch's callers as the source of a
/// [`BatchFailed`].
#[derive(Debug, Clone)]
pub(crate) struct LengthMismatch {
    pub(crate) expected: usize,
    pub(crate) actual: usize,
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "batch service returned {} results for {} items",
            self.actual, self.expected
        )
    }
}

impl Error for LengthMismatch {}

/// Which setting a [`ConfigError`] is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// `max_batch_size` was zero.
    MaxBatchSize,
    /// `queue_capacity` was zero or above the supported maximum.
    QueueCapacity,
    /// `max_concurrent_batches` was zero.
    MaxConcurrentBatches,
    /// A preferred batch size was zero or above `max_batch_size`.
    PreferredBatchSizes,
    /// `max_batch_cost` was zero.
    MaxBatchCost,
    /// `queue_timeout` was zero.
    QueueTimeout,
    /// `max_wait` was zero where the setting needs a wait
    /// ([`WaitFor::RecentLoad`](crate::WaitFor::RecentLoad)).
    MaxWait,
    /// An [`AdaptiveConfig`](crate::AdaptiveConfig) value was out of range,
    /// or an adaptive profile was invalid (a zero size or duration, or no
    /// adaptive cap to start).
    AdaptiveBatchSize,
    /// `max_isolation_passes` was zero or above 64.
    FailureIsolation,
}

/// An impossible configuration, reported when the configuration is built
/// (or changed through a [`BatchHandle`](crate::BatchHandle)), never at run
/// time.
#[derive(Debug, Clone)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// Which setting is wrong.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid batch configuration: {}", self.message)
    }
}

impl Error for ConfigError {}
