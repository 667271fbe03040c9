//! The front's autoscaler of one version's nodes: convoy-remote's
//! `MetricsScraper` (the nodes' in-flight gauges, read from their
//! `/metrics`) plus the requests waiting at the front for a first node →
//! convoy-autoscale's `TargetOngoing` → a `Scaler` (convoy-kube's
//! `KubeScaler` on Kubernetes, or one the embedding program gives).
//!
//! Scale from zero does not wait for a tick: the first request that finds
//! no node asks the scaler for one at once ([`ColdStart::on_wait`]).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use convoy_autoscale::{
    Autoscaler, AutoscalerHandle, Engine, EngineConfig, LoadSample, Scaler, SignalSource,
    TargetOngoing, TargetOngoingConfig,
};
use convoy_remote::scrape::{MetricsScraper, ScrapeConfig};
use convoy_remote::{HttpEndpoint, Pool};
use http_body_util::Full;
use tower::BoxError;

use super::cold::ColdStart;
use crate::config::RemoteAutoscale;

/// The scraper of `a.version`'s ready nodes' `/metrics`, every
/// `a.interval`.
pub(super) fn scraper(
    a: &RemoteAutoscale,
    pool: &Pool<HttpEndpoint<Full<Bytes>>>,
) -> Result<Arc<MetricsScraper>, BoxError> {
    let targets = {
        let (pool, version) = (pool.clone(), a.version.clone());
        move || {
            pool.endpoints()
                .into_iter()
                .filter(|s| s.endpoint.version == version && s.endpoint.is_ready())
                .map(|s| s.endpoint)
                .collect()
        }
    };
    Ok(Arc::new(MetricsScraper::new(
        targets,
        ScrapeConfig {
            interval: a.interval,
            max_age: a.interval * 3,
            ..ScrapeConfig::default()
        },
    )?))
}

/// Starts the autoscaler of `deployment`'s version `a.version` (see the
/// [module docs](self)).
pub(super) fn start(
    deployment: &str,
    a: &RemoteAutoscale,
    scaler: Arc<dyn Scaler>,
    scraper: Arc<MetricsScraper>,
    cold: &Arc<ColdStart>,
) -> Result<AutoscalerHandle, BoxError> {
    let label = format!("{deployment}/{}", a.version);
    let waiting = cold.waiting_counter();
    let source = Signal {
        scraper,
        waiting: waiting.clone(),
    };
    let policy = TargetOngoing::new(
        TargetOngoingConfig::default()
            .target_ongoing_requests(a.target_ongoing)
            .look_back(a.look_back),
    )?;
    let engine = Engine::new(
        EngineConfig::default()
            .name(label.clone())
            .min_replicas(a.min)
            .max_replicas(a.max)
            .interval(a.interval)
            .upscale_delay(std::time::Duration::ZERO)
            .downscale_delay(a.downscale_delay),
        Box::new(policy),
    )?;
    let autoscaler = Autoscaler::new(engine, scaler.clone()).with_source(source);
    let handle = autoscaler.handle();
    tokio::spawn(autoscaler.run());
    // From zero: one node at once for the first waiting request.
    cold.on_wait(move || {
        if scaler.replicas().current == 0 {
            let scaler = scaler.clone();
            let label = label.clone();
            tokio::spawn(async move {
                tracing::info!(version = %label, "a request waits: scaling from zero to one node");
                if let Err(e) = scaler.scale_to(1).await {
                    tracing::warn!(version = %label, error = %e, "scale from zero failed");
                }
            });
        }
    });
    Ok(handle)
}

/// The nodes' figures plus the requests waiting at the front.
struct Signal {
    scraper: Arc<MetricsScraper>,
    waiting: Arc<std::sync::atomic::AtomicUsize>,
}

impl SignalSource for Signal {
    fn sample(&mut self, _now: std::time::Duration) -> Option<LoadSample> {
        let waiting = self.waiting.load(Ordering::Relaxed) as f64;
        let mut sample = self.scraper.load();
        if let Some(s) = &mut sample {
            // Each node counts the scrape's own /metrics request in flight.
            let own = f64::from(s.replicas_reporting.unwrap_or(0));
            s.ongoing = (s.ongoing - own).max(s.queued) + waiting;
            s.running = (s.ongoing - s.queued - waiting).max(0.0);
            s.queued += waiting;
        } else if waiting > 0.0 {
            sample = Some(LoadSample {
                ongoing: waiting,
                queued: waiting,
                ..LoadSample::default()
            });
        }
        sample
    }
}
