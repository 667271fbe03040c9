//! Per-version request metrics.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use example_tensor::NamedTensor;
use tokio::time::Instant;
use tower::{BoxError, Service};

use super::{Answer, Item};
use crate::drift::{DriftMonitor, ItemFeatures};

/// Counts requests and errors and records latency per model and version
/// (`convoy_server_requests_total`, `convoy_server_errors_total`,
/// `convoy_server_request_seconds`), and tags the answer with its version;
/// with a drift monitor, feeds it the sampled requests' features.
#[derive(Debug, Clone)]
pub struct Counted<S> {
    inner: S,
    model: Arc<str>,
    version: Arc<str>,
    drift: Option<DriftMonitor>,
}

impl<S> Counted<S> {
    pub(super) fn new(model: &str, version: &str, inner: S) -> Self {
        Self {
            inner,
            model: model.into(),
            version: version.into(),
            drift: None,
        }
    }

    /// Feeds `drift`'s monitor (one atomic per request; a sampled request's
    /// features are sent to the monitor's task without waiting).
    pub(super) fn with_drift(mut self, drift: Option<DriftMonitor>) -> Self {
        self.drift = drift;
        self
    }
}

impl<S> Service<Item> for Counted<S>
where
    S: Service<Item, Response = Vec<NamedTensor>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Answer, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, item: Item) -> Self::Future {
        let start = Instant::now();
        let (model, version) = (self.model.to_string(), self.version.to_string());
        let sampled = self.drift.as_ref().and_then(|d| {
            let ticket = d.handle.ticket()?;
            let features = ItemFeatures { kind: d.kind };
            let mut row = convoy_drift::Row::new();
            convoy_drift::Features::inputs(&features, &item, &mut row);
            Some((d.handle.clone(), ticket, features, row))
        });
        let answer = self.inner.call(item);
        let tag = Arc::clone(&self.version);
        Box::pin(async move {
            let result = answer.await.map_err(Into::into);
            let labels = [("model", model), ("version", version)];
            metrics::counter!("convoy_server_requests_total", &labels).increment(1);
            metrics::histogram!("convoy_server_request_seconds", &labels)
                .record(start.elapsed().as_secs_f64());
            if result.is_err() {
                metrics::counter!("convoy_server_errors_total", &labels).increment(1);
            }
            let answer = result.map(|outputs| Answer {
                version: tag,
                outputs,
            });
            if let (Ok(a), Some((handle, ticket, features, mut row))) = (&answer, sampled) {
                convoy_drift::Features::outputs(&features, a, &mut row);
                handle.submit(ticket, row);
            }
            answer
        })
    }
}
