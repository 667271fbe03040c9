//! KEDA's external scaler (`externalscaler.proto`) serving convoy's load
//! signal, for clusters that already run KEDA: KEDA asks this gRPC service
//! whether a deployment is active and for its metric, and its HPA does the
//! scaling — instead of [`KubeScaler`](crate::KubeScaler) and convoy's own
//! policy.
//!
//! The metric is convoy's *ongoing requests* (queued + running, Ray Serve's
//! and Knative's signal) over all replicas of a deployment; KEDA's HPA
//! divides it by the target per replica. A ScaledObject's trigger names the
//! deployment:
//!
//! ```yaml
//! triggers:
//!   - type: external
//!     metadata:
//!       scalerAddress: convoy-front.convoy:9100
//!       deployment: identity      # required: the convoy deployment
//!       targetOngoing: "4"        # optional: ongoing requests per replica
//! ```
//!
//! Stale data never scales down: when a deployment's last sample is older
//! than [`max_age`](KedaScaler::max_age), `GetMetrics` answers `UNAVAILABLE`
//! (KEDA keeps the replicas, or applies the ScaledObject's `fallback`) and
//! `IsActive` answers `true` (no scale to zero on what is not known).

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;

use convoy_autoscale::{LoadSample, SignalSource};
use futures::stream::{self, Stream, StreamExt};
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};
use tonic::{Request, Response, Status};

use crate::error::Error;

#[allow(
    missing_docs,
    unreachable_pub,
    missing_debug_implementations,
    clippy::all,
    clippy::pedantic
)]
mod proto {
    tonic::include_proto!("externalscaler");
}

pub use proto::external_scaler_client::ExternalScalerClient;
pub use proto::external_scaler_server::{ExternalScaler, ExternalScalerServer};
pub use proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec,
    MetricValue, ScaledObjectRef,
};

/// The metric's name in `GetMetricSpec` and `GetMetrics`.
pub const METRIC_NAME: &str = "convoy_ongoing_requests";

/// The latest load sample of each deployment, shared between whoever
/// measures (a [`SignalSource`], or any code calling
/// [`record`](KedaSignals::record)) and the [`KedaScaler`].
#[derive(Debug, Clone, Default)]
pub struct KedaSignals(Arc<Mutex<BTreeMap<String, (Instant, LoadSample)>>>);

impl KedaSignals {
    /// No deployment known yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `sample` as `deployment`'s latest, measured now.
    pub fn record(&self, deployment: &str, sample: LoadSample) {
        self.0
            .lock()
            .insert(deployment.to_owned(), (Instant::now(), sample));
    }

    /// The latest sample of `deployment` and when it was recorded.
    pub fn latest(&self, deployment: &str) -> Option<(Instant, LoadSample)> {
        self.0.lock().get(deployment).cloned()
    }

    /// Samples `source` every `period` and records it for `deployment`,
    /// forever (spawn it); a `None` from the source records nothing, so the
    /// data goes stale rather than wrong.
    pub async fn sample_every(
        self,
        deployment: String,
        mut source: impl SignalSource,
        period: Duration,
    ) {
        let epoch = Instant::now();
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(sample) = source.sample(epoch.elapsed()) {
                self.record(&deployment, sample);
            }
        }
    }
}

/// KEDA's `ExternalScaler` gRPC service over [`KedaSignals`]; serve it with
/// [`into_service`](KedaScaler::into_service) on a tonic server.
#[derive(Debug, Clone)]
pub struct KedaScaler {
    signals: KedaSignals,
    target: f64,
    max_age: Duration,
    stream_period: Duration,
}

fn positive(field: &str, v: f64) -> Result<f64, Error> {
    if v.is_finite() && v > 0.0 {
        Ok(v)
    } else {
        Err(Error::config(
            field,
            format!("{v} must be a finite number > 0"),
        ))
    }
}

impl KedaScaler {
    /// A scaler with `target_ongoing` requests per replica unless a trigger
    /// says otherwise; fails naming the field when not finite and > 0.
    pub fn new(signals: KedaSignals, target_ongoing: f64) -> Result<Self, Error> {
        Ok(Self {
            signals,
            target: positive("target_ongoing", target_ongoing)?,
            max_age: Duration::from_secs(30),
            stream_period: Duration::from_secs(1),
        })
    }

    /// The oldest sample answered (default 30 s); fails when zero.
    pub fn max_age(mut self, age: Duration) -> Result<Self, Error> {
        if age.is_zero() {
            return Err(Error::config("max_age", "must be greater than zero"));
        }
        self.max_age = age;
        Ok(self)
    }

    /// How often `StreamIsActive` re-checks (default 1 s); fails when zero.
    pub fn stream_period(mut self, period: Duration) -> Result<Self, Error> {
        if period.is_zero() {
            return Err(Error::config("stream_period", "must be greater than zero"));
        }
        self.stream_period = period;
        Ok(self)
    }

    /// The tonic service.
    pub fn into_service(self) -> ExternalScalerServer<Self> {
        ExternalScalerServer::new(self)
    }

    fn deployment(r: &ScaledObjectRef) -> Result<&str, Status> {
        r.scaler_metadata
            .get("deployment")
            .map(String::as_str)
            .filter(|d| !d.is_empty())
            .ok_or_else(|| {
                Status::invalid_argument(format!(
                    "ScaledObject {}/{}: trigger metadata `deployment` (the convoy deployment) is required",
                    r.namespace, r.name
                ))
            })
    }

    fn target(&self, r: &ScaledObjectRef) -> Result<f64, Status> {
        match r.scaler_metadata.get("targetOngoing") {
            None => Ok(self.target),
            Some(t) => t
                .trim()
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite() && *v > 0.0)
                .ok_or_else(|| {
                    Status::invalid_argument(format!(
                        "trigger metadata `targetOngoing` = {t:?}: must be a number > 0"
                    ))
                }),
        }
    }

    /// The deployment's sample if fresh: `Ok(None)` when stale.
    fn fresh(&self, deployment: &str) -> Result<Option<LoadSample>, Status> {
        let (at, sample) = self.signals.latest(deployment).ok_or_else(|| {
            Status::not_found(format!(
                "no load signal for convoy deployment {deployment:?}"
            ))
        })?;
        Ok((Instant::now().saturating_duration_since(at) <= self.max_age).then_some(sample))
    }

    fn active(&self, r: &ScaledObjectRef) -> Result<bool, Status> {
        Ok(match self.fresh(Self::deployment(r)?)? {
            Some(s) => s.ongoing > 0.0 || s.queued > 0.0 || s.arrivals > 0,
            // Unknown is not idle: never scale to zero on stale data.
            None => true,
        })
    }
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl ExternalScaler for KedaScaler {
    async fn is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<IsActiveResponse>, Status> {
        let result = self.active(request.get_ref())?;
        Ok(Response::new(IsActiveResponse { result }))
    }

    type StreamIsActiveStream = BoxStream<IsActiveResponse>;

    /// The state at once, then each change (checked every `stream_period`).
    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let scaled = request.into_inner();
        let first = self.active(&scaled)?;
        let mut tick = tokio::time::interval(self.stream_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let this = self.clone();
        let changes = stream::unfold(
            (this, scaled, tick, None::<bool>),
            |(this, scaled, mut tick, last)| async move {
                loop {
                    tick.tick().await;
                    let now = match this.active(&scaled) {
                        Ok(now) => now,
                        Err(status) => return Some((Err(status), (this, scaled, tick, last))),
                    };
                    if last != Some(now) {
                        return Some((
                            Ok(IsActiveResponse { result: now }),
                            (this, scaled, tick, Some(now)),
                        ));
                    }
                }
            },
        );
        // The first tick fires at once and repeats `first` unless it changed.
        let stream =
            stream::iter([Ok(IsActiveResponse { result: first })]).chain(changes.skip_while(
                move |r| futures::future::ready(matches!(r, Ok(r) if r.result == first)),
            ));
        Ok(Response::new(Box::pin(stream)))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        let r = request.get_ref();
        Self::deployment(r)?;
        let target = self.target(r)?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: METRIC_NAME.to_owned(),
                target_size: target.ceil() as i64,
                target_size_float: target,
            }],
        }))
    }

    async fn get_metrics(
        &self,
        request: Request<GetMetricsRequest>,
    ) -> Result<Response<GetMetricsResponse>, Status> {
        let r = request.into_inner();
        let scaled = r
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("scaledObjectRef is required"))?;
        let deployment = Self::deployment(&scaled)?;
        let sample = self.fresh(deployment)?.ok_or_else(|| {
            Status::unavailable(format!(
                "the load signal of {deployment:?} is older than {:?}: not answering, so nothing scales on stale data",
                self.max_age
            ))
        })?;
        Ok(Response::new(GetMetricsResponse {
            metric_values: vec![MetricValue {
                metric_name: if r.metric_name.is_empty() {
                    METRIC_NAME.to_owned()
                } else {
                    r.metric_name
                },
                metric_value: sample.ongoing.ceil() as i64,
                metric_value_float: sample.ongoing,
            }],
        }))
    }

    type StreamMetricSpecStream = BoxStream<GetMetricSpecResponse>;

    /// Not implemented: the target is fixed per trigger, so KEDA's pull
    /// (`GetMetricSpec`) says all; KEDA falls back to it on `UNIMPLEMENTED`.
    async fn stream_metric_spec(
        &self,
        _request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamMetricSpecStream>, Status> {
        Err(Status::unimplemented(
            "targets are fixed per trigger: use GetMetricSpec",
        ))
    }
}
