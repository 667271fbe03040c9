//! How fresh what we know from the API server is.

use std::future::Future;

use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::error::{Error, ErrorKind};

/// Whether the API server answered lately, as seen by one component (the
/// scaler, the EndpointSlice source or the leader election).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ApiHealth {
    /// When the last call succeeded (tokio clock), `None` before the first.
    pub last_success: Option<Instant>,
    /// The last error, cleared by a success.
    pub last_error: Option<String>,
    /// Failed calls since the last success.
    pub consecutive_failures: u32,
}

impl ApiHealth {
    /// Whether the last success is older than `max_age` at `now` (or there
    /// was none).
    pub fn is_stale(&self, now: Instant, max_age: Duration) -> bool {
        self.last_success
            .is_none_or(|at| now.saturating_duration_since(at) > max_age)
    }

    /// Whether the last call failed.
    pub fn is_failing(&self) -> bool {
        self.consecutive_failures > 0
    }
}

/// Shared, updated on every call; also published as the gauge
/// `convoy_kube_api_reachable` and the counter
/// `convoy_kube_api_failures_total` (labels `component`, `name`).
#[derive(Debug)]
pub(crate) struct HealthCell {
    health: Mutex<ApiHealth>,
    component: &'static str,
    name: String,
}

impl HealthCell {
    /// The health of `component` (`scaler`, `endpoint_slices`, `leader`)
    /// for the object `name`.
    pub(crate) fn new(component: &'static str, name: &str) -> Self {
        Self {
            health: Mutex::new(ApiHealth::default()),
            component,
            name: name.to_owned(),
        }
    }

    fn reachable(&self, up: bool) {
        metrics::gauge!("convoy_kube_api_reachable", "component" => self.component, "name" => self.name.clone())
            .set(if up { 1.0 } else { 0.0 });
    }

    pub(crate) fn success(&self) {
        self.reachable(true);
        let mut h = self.health.lock();
        h.last_success = Some(Instant::now());
        h.last_error = None;
        h.consecutive_failures = 0;
    }

    pub(crate) fn failure(&self, error: &impl std::fmt::Display) {
        self.reachable(false);
        metrics::counter!("convoy_kube_api_failures_total", "component" => self.component, "name" => self.name.clone())
            .increment(1);
        let mut h = self.health.lock();
        h.last_error = Some(error.to_string());
        h.consecutive_failures = h.consecutive_failures.saturating_add(1);
    }

    /// Makes one API call, bounded by `limit` (no answer in time is
    /// [`ErrorKind::Unreachable`]: a connection lost without a reset must
    /// not hold the caller), classifies its error and records the outcome.
    /// A 404 or 409 is an answer: the server is there.
    pub(crate) async fn call<T>(
        &self,
        limit: Duration,
        context: &str,
        call: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        let result = match tokio::time::timeout(limit, call).await {
            Ok(result) => result.map_err(|e| Error::from_kube(context, e)),
            Err(_) => Err(Error::new(
                ErrorKind::Unreachable,
                format!("{context}: no answer within {limit:?}"),
            )),
        };
        match &result {
            Err(error) if error.kind() == ErrorKind::Unreachable => self.failure(error),
            _ => self.success(),
        }
        result
    }

    pub(crate) fn get(&self) -> ApiHealth {
        self.health.lock().clone()
    }
}
