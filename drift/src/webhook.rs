//! The webhook a retraining pipeline listens on: the report POSTed as JSON
//! once per transition into dataset drift, with bounded retries.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;

use crate::config::WebhookSettings;
use crate::report::DriftReport;

/// The most of a hook's answer read back (its status is what counts).
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// First retry delay; doubled on every further attempt.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Posts reports to a URL (plain HTTP/1.1).
#[derive(Clone)]
pub struct Webhook {
    settings: WebhookSettings,
    client: Client<HttpConnector, Full<Bytes>>,
    delivered: Arc<AtomicU64>,
    failed: Arc<AtomicU64>,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("url", &self.settings.url)
            .field("attempts", &self.settings.attempts)
            .finish()
    }
}

impl Webhook {
    /// A webhook with these settings.
    pub fn new(settings: WebhookSettings) -> Self {
        Self {
            settings,
            client: Client::builder(TokioExecutor::new()).build_http(),
            delivered: Arc::new(AtomicU64::new(0)),
            failed: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Notifications delivered (a 2xx answer).
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Notifications given up after every attempt failed.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Posts `report` on a spawned task: up to `attempts` tries, each
    /// bounded by the timeout, backing off from 200 ms, doubling.
    pub fn notify(&self, report: Arc<DriftReport>) {
        let this = self.clone();
        tokio::spawn(async move {
            let body = match serde_json::to_vec(&*report) {
                Ok(b) => Bytes::from(b),
                Err(_) => return,
            };
            let mut backoff = FIRST_BACKOFF;
            for attempt in 1..=this.settings.attempts {
                match this.post(body.clone()).await {
                    Ok(()) => {
                        this.delivered.fetch_add(1, Ordering::Relaxed);
                        metrics::counter!("convoy_drift_webhook_total", "outcome" => "delivered")
                            .increment(1);
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(url = %this.settings.url, attempt, error = %e, "drift webhook failed");
                    }
                }
                if attempt < this.settings.attempts {
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                }
            }
            this.failed.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("convoy_drift_webhook_total", "outcome" => "failed").increment(1);
        });
    }

    async fn post(&self, body: Bytes) -> Result<(), String> {
        let req = http::Request::post(self.settings.url.clone())
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))
            .map_err(|e| e.to_string())?;
        let send = async {
            let resp = self.client.request(req).await.map_err(|e| e.to_string())?;
            let status = resp.status();
            // Drain a short body so the connection is reusable; a longer one
            // is dropped unread (with its connection): the answer is only
            // its status.
            let _ = Limited::new(resp.into_body(), MAX_ANSWER_BYTES)
                .collect()
                .await;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("answered {status}"))
            }
        };
        tokio::time::timeout(self.settings.timeout, send)
            .await
            .map_err(|_| format!("no answer within {:?}", self.settings.timeout))?
    }
}
