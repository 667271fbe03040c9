//! A load signal for convoy-autoscale read straight from the replicas'
//! `/metrics` (no Prometheus server in the loop).
//!
//! [`MetricsScraper`] fetches every ready endpoint's metrics page each
//! `interval` (bounded time and size), reads the in-flight and queue gauges
//! and the completion counter, and is a
//! [`SignalSource`]: each `sample` sums the
//! replicas' latest fresh figures into one
//! [`LoadSample`], so the policy sees load
//! within one scrape interval instead of the HPA path's scrape + adapter
//! sync. Replicas whose figures are older than `max_age` (unreachable,
//! slow) are left out and `replicas_reporting` says how many answered, so
//! the policies' missing-metric rules apply.
//!
//! The defaults read what convoy's multi-model server exposes:
//!
//! | figure | metric |
//! |---|---|
//! | ongoing (queued + running) | `convoy_node_in_flight_requests` |
//! | queued | `convoy_batcher_queue_depth` (every batcher summed) |
//! | completions | `convoy_server_requests_total` (difference between scrapes) |

mod parse;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use convoy_autoscale::{LoadSample, SignalSource};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::client::legacy::connect::HttpConnector as HyperConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use parking_lot::Mutex;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::endpoint::Endpoint;
use crate::error::ConfigError;
use crate::pool::Pool;

pub use self::parse::sum_series;

/// What to scrape and how often.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeConfig {
    /// Path of the metrics page.
    pub path: String,
    /// Time between two scrapes of every replica.
    pub interval: Duration,
    /// Bound on one scrape.
    pub timeout: Duration,
    /// Figures older than this are left out of a sample.
    pub max_age: Duration,
    /// Largest metrics page read; a larger one is a failed scrape.
    pub max_body_bytes: usize,
    /// Gauges summed into `ongoing` (requests in the replica).
    pub ongoing: Vec<String>,
    /// Gauges summed into `queued`.
    pub queued: Vec<String>,
    /// Counters of completed requests, summed; their increase between two
    /// samples is `completions`.
    pub completions: Vec<String>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            path: "/metrics".into(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_millis(500),
            max_age: Duration::from_secs(3),
            max_body_bytes: 4 << 20,
            ongoing: vec!["convoy_node_in_flight_requests".into()],
            queued: vec!["convoy_batcher_queue_depth".into()],
            completions: vec!["convoy_server_requests_total".into()],
        }
    }
}

impl ScrapeConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !self.path.starts_with('/') {
            return Err(ConfigError::new("path", "must start with '/'"));
        }
        for (field, d) in [
            ("interval", self.interval),
            ("timeout", self.timeout),
            ("max_age", self.max_age),
        ] {
            if d.is_zero() {
                return Err(ConfigError::new(field, "must be positive"));
            }
        }
        if self.max_body_bytes == 0 {
            return Err(ConfigError::new("max_body_bytes", "must be positive"));
        }
        if self.ongoing.is_empty() && self.queued.is_empty() {
            return Err(ConfigError::new(
                "ongoing",
                "name at least one gauge (ongoing or queued)",
            ));
        }
        Ok(())
    }
}

/// One replica's latest figures.
#[derive(Debug, Clone, Copy)]
struct Figures {
    at: Instant,
    ongoing: Option<f64>,
    queued: Option<f64>,
    completed_total: Option<f64>,
}

#[derive(Debug, Default)]
struct Shared {
    latest: HashMap<String, Figures>,
    /// Completion counters at the previous `sample`, per replica.
    sampled_total: HashMap<String, f64>,
}

/// Scrapes replicas' metrics pages and serves them as a
/// [`SignalSource`] (see the [module docs](self)).
#[derive(Debug)]
pub struct MetricsScraper {
    shared: Arc<Mutex<Shared>>,
    max_age: Duration,
    task: JoinHandle<()>,
}

impl Drop for MetricsScraper {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type Targets = Box<dyn Fn() -> Vec<Endpoint> + Send + Sync>;

impl MetricsScraper {
    /// Scrapes the endpoints `targets` returns at each round (the ready
    /// ones are scraped). Starts on the current tokio runtime.
    pub fn new(
        targets: impl Fn() -> Vec<Endpoint> + Send + Sync + 'static,
        config: ScrapeConfig,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let shared = Arc::new(Mutex::new(Shared::default()));
        let max_age = config.max_age;
        let task = tokio::spawn(run(Box::new(targets), config, shared.clone()));
        Ok(Self {
            shared,
            max_age,
            task,
        })
    }

    /// Scrapes the ready endpoints of a [`Pool`] (ejected ones included:
    /// they still hold requests).
    pub fn for_pool<S: Send + 'static>(
        pool: &Pool<S>,
        config: ScrapeConfig,
    ) -> Result<Self, ConfigError> {
        let pool = pool.clone();
        Self::new(
            move || {
                pool.endpoints()
                    .into_iter()
                    .map(|s| s.endpoint)
                    .filter(Endpoint::is_ready)
                    .collect()
            },
            config,
        )
    }

    /// How many replicas have figures younger than `max_age`.
    pub fn reporting(&self) -> usize {
        let shared = self.shared.lock();
        shared
            .latest
            .values()
            .filter(|f| f.at.elapsed() <= self.max_age)
            .count()
    }
}

impl MetricsScraper {
    /// Each replica's latest fresh figures (younger than `max_age`): its
    /// endpoint id, when they were read, and its ongoing requests (queued
    /// and running), e.g. for a scaler that removes the least loaded
    /// replicas first.
    pub fn ongoing_by_replica(&self) -> Vec<(String, Instant, f64)> {
        let shared = self.shared.lock();
        shared
            .latest
            .iter()
            .filter(|(_, f)| f.at.elapsed() <= self.max_age)
            .map(|(id, f)| {
                let queued = f.queued.unwrap_or(0.0);
                (id.clone(), f.at, f.ongoing.unwrap_or(queued).max(queued))
            })
            .collect()
    }

    /// The sum of the replicas' fresh figures, as
    /// [`SignalSource::sample`] gives it, from a shared reference (a
    /// scraper shared between a signal and a scaler).
    pub fn load(&self) -> Option<LoadSample> {
        let mut shared = self.shared.lock();
        let Shared {
            latest,
            sampled_total,
        } = &mut *shared;
        let mut total: Option<LoadSample> = None;
        for (id, f) in latest.iter() {
            if f.at.elapsed() > self.max_age {
                continue;
            }
            let queued = f.queued.unwrap_or(0.0);
            let ongoing = f.ongoing.unwrap_or(queued).max(queued);
            let completions = match (f.completed_total, sampled_total.get(id)) {
                // A counter that went down restarted with its process.
                (Some(now), Some(&before)) if now >= before => (now - before).round() as u64,
                (Some(now), Some(_)) => now.round() as u64,
                _ => 0,
            };
            if let Some(now) = f.completed_total {
                sampled_total.insert(id.clone(), now);
            }
            let s = LoadSample {
                ongoing,
                queued,
                running: ongoing - queued,
                completions,
                replicas_reporting: Some(1),
                ..LoadSample::default()
            };
            match &mut total {
                Some(t) => t.merge(&s),
                None => total = Some(s),
            }
        }
        sampled_total.retain(|id, _| latest.contains_key(id));
        total
    }
}

impl SignalSource for MetricsScraper {
    fn sample(&mut self, _now: Duration) -> Option<LoadSample> {
        self.load()
    }
}

async fn run(targets: Targets, config: ScrapeConfig, shared: Arc<Mutex<Shared>>) {
    let mut connector = HyperConnector::new();
    connector.set_connect_timeout(Some(config.timeout));
    let client: Client<HyperConnector, Empty<Bytes>> =
        Client::builder(TokioExecutor::new()).build(connector);
    let config = Arc::new(config);
    let mut tick = tokio::time::interval(config.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let endpoints = targets();
        let scrapes = endpoints.iter().map(|e| {
            let client = client.clone();
            let config = config.clone();
            let uri = format!("http://{}{}", e.addr, config.path);
            async move {
                let at = Instant::now();
                let text = tokio::time::timeout(
                    config.timeout,
                    fetch(&client, uri, config.max_body_bytes),
                )
                .await
                .ok()
                .flatten();
                text.map(|text| Figures {
                    at,
                    ongoing: sum_series(&text, &config.ongoing),
                    queued: sum_series(&text, &config.queued),
                    completed_total: sum_series(&text, &config.completions),
                })
            }
        });
        let results = futures::future::join_all(scrapes).await;
        let mut shared = shared.lock();
        shared
            .latest
            .retain(|id, _| endpoints.iter().any(|e| &e.id == id));
        for (e, figures) in endpoints.iter().zip(results) {
            match figures {
                Some(f) => {
                    shared.latest.insert(e.id.clone(), f);
                }
                None => tracing::debug!(endpoint = %e, "metrics scrape failed"),
            }
        }
    }
}

async fn fetch(
    client: &Client<HyperConnector, Empty<Bytes>>,
    uri: String,
    limit: usize,
) -> Option<String> {
    let req = http::Request::get(uri).body(Empty::new()).ok()?;
    let rsp = client.request(req).await.ok()?;
    if !rsp.status().is_success() {
        return None;
    }
    let body = Limited::new(rsp.into_body(), limit).collect().await.ok()?;
    String::from_utf8(body.to_bytes().to_vec()).ok()
}
