use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::{watch, Notify};
use tokio::time::{Instant, MissedTickBehavior};

use super::evaluate::{Engine, ScaleDecision};
use super::scaler::Scaler;
use crate::signal::{LoadSample, SignalSource};

type Observer = Box<dyn FnMut(&ScaleDecision) + Send>;

/// The async driver: ticks an [`Engine`] on the tokio clock and applies its
/// decisions through a [`Scaler`].
///
/// Each tick (every [`EngineConfig::interval`](crate::EngineConfig::interval)),
/// it pulls a sample from the [`SignalSource`] if one is set, reads the
/// scaler's replica counts, evaluates the engine, calls
/// [`Scaler::scale_to`] when the count changes, emits metrics and publishes
/// the decision (to [`AutoscalerHandle::decisions`] and the observer).
/// Engine time is the tokio time elapsed since the autoscaler was created, so
/// paused-time tests drive it deterministically.
///
/// Metrics (labelled `deployment` = [`EngineConfig::name`](crate::EngineConfig::name)):
/// gauges `convoy_autoscale_desired_replicas`, `convoy_autoscale_current_replicas`,
/// `convoy_autoscale_ready_replicas`, `convoy_autoscale_min_replicas`,
/// `convoy_autoscale_max_replicas`; counters `convoy_autoscale_decisions_total`
/// (label `reason`), `convoy_autoscale_scale_events_total` (label `direction`:
/// `up`/`down`) and `convoy_autoscale_scale_errors_total`.
///
/// ```
/// use convoy_autoscale::{
///     Autoscaler, Engine, EngineConfig, ReplicaSet, ReplicaSetConfig, TargetOngoing,
///     TargetOngoingConfig,
/// };
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let replicas = ReplicaSet::new(ReplicaSetConfig::default(), || async {
///     Ok::<_, tower::BoxError>(service_fn(|x: u32| async move { Ok::<_, tower::BoxError>(x) }))
/// })?;
/// let engine = Engine::new(
///     EngineConfig::default().min_replicas(1).max_replicas(8),
///     Box::new(TargetOngoing::new(TargetOngoingConfig::default())?),
/// )?;
/// // The replica set is both the scaler and, through its in-flight counts, the signal source.
/// let mut autoscaler = Autoscaler::new(engine, replicas.clone()).with_source(replicas.clone());
/// let handle = autoscaler.handle();
/// // One step by hand; in production: `tokio::spawn(autoscaler.run())`.
/// let decision = autoscaler.tick().await;
/// assert_eq!((decision.current, decision.desired), (0, 1)); // the initial replica
/// handle.shutdown();
/// # Ok(())
/// # }
/// ```
pub struct Autoscaler<S> {
    engine: Arc<Mutex<Engine>>,
    scaler: S,
    source: Option<Box<dyn SignalSource>>,
    epoch: Instant,
    decisions: watch::Sender<Option<ScaleDecision>>,
    shutdown: Arc<Notify>,
    observer: Option<Observer>,
}

impl<S> fmt::Debug for Autoscaler<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Autoscaler")
            .field("engine", &self.engine)
            .field("has_source", &self.source.is_some())
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl<S: Scaler> Autoscaler<S> {
    /// Drives `engine` with `scaler`. Engine time starts now (tokio clock).
    pub fn new(engine: Engine, scaler: S) -> Self {
        let (decisions, _) = watch::channel(None);
        Self {
            engine: Arc::new(Mutex::new(engine)),
            scaler,
            source: None,
            epoch: Instant::now(),
            decisions,
            shutdown: Arc::new(Notify::new()),
            observer: None,
        }
    }

    /// Pulls a sample from `source` at every tick (in addition to pushed samples).
    pub fn with_source(mut self, source: impl SignalSource + 'static) -> Self {
        self.source = Some(Box::new(source));
        self
    }

    /// Calls `observer` with every decision.
    pub fn on_decision(mut self, observer: impl FnMut(&ScaleDecision) + Send + 'static) -> Self {
        self.observer = Some(Box::new(observer));
        self
    }

    /// A handle to push samples, watch decisions and stop the driver.
    pub fn handle(&self) -> AutoscalerHandle {
        AutoscalerHandle {
            engine: Arc::clone(&self.engine),
            epoch: self.epoch,
            decisions: self.decisions.subscribe(),
            shutdown: Arc::clone(&self.shutdown),
        }
    }

    /// The scaler.
    pub fn scaler(&self) -> &S {
        &self.scaler
    }

    /// Engine time now.
    pub fn now(&self) -> Duration {
        self.epoch.elapsed()
    }

    /// Runs one step now and returns its decision. A failed `scale_to` is
    /// logged and counted; the next tick tries again.
    pub async fn tick(&mut self) -> ScaleDecision {
        let now = self.now();
        let counts = self.scaler.replicas();
        let decision = {
            let sample = self.source.as_mut().and_then(|s| s.sample(now));
            let mut engine = self.engine.lock();
            if let Some(sample) = sample {
                engine.record(now, sample);
            }
            engine.evaluate(now, counts)
        };
        let name = self.engine.lock().config().name.clone();
        metrics::gauge!("convoy_autoscale_desired_replicas", "deployment" => name.clone())
            .set(f64::from(decision.desired));
        metrics::gauge!("convoy_autoscale_current_replicas", "deployment" => name.clone())
            .set(f64::from(decision.current));
        metrics::gauge!("convoy_autoscale_ready_replicas", "deployment" => name.clone())
            .set(f64::from(decision.ready));
        let (min, max) = {
            let engine = self.engine.lock();
            (engine.config().min_replicas, engine.config().max_replicas)
        };
        metrics::gauge!("convoy_autoscale_min_replicas", "deployment" => name.clone())
            .set(f64::from(min));
        metrics::gauge!("convoy_autoscale_max_replicas", "deployment" => name.clone())
            .set(f64::from(max));
        metrics::counter!(
            "convoy_autoscale_decisions_total",
            "deployment" => name.clone(),
            "reason" => decision.reason.kind()
        )
        .increment(1);
        if decision.changed() {
            let direction = if decision.desired > decision.current {
                "up"
            } else {
                "down"
            };
            tracing::debug!(
                deployment = %name,
                from = decision.current,
                to = decision.desired,
                reason = %decision.reason,
                "scaling"
            );
            metrics::counter!(
                "convoy_autoscale_scale_events_total",
                "deployment" => name.clone(),
                "direction" => direction
            )
            .increment(1);
            if let Err(error) = self.scaler.scale_to(decision.desired).await {
                tracing::warn!(deployment = %name, %error, "scale_to failed");
                metrics::counter!("convoy_autoscale_scale_errors_total", "deployment" => name)
                    .increment(1);
            }
        }
        if let Some(observer) = self.observer.as_mut() {
            observer(&decision);
        }
        self.decisions.send_replace(Some(decision));
        decision
    }

    /// Ticks every interval until [`AutoscalerHandle::shutdown`] is called.
    /// The first tick is immediate (it applies the initial replica count).
    pub async fn run(mut self) {
        let period = self.engine.lock().config().interval;
        let mut ticker = tokio::time::interval(period);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let shutdown = Arc::clone(&self.shutdown);
        loop {
            tokio::select! {
                biased;
                _ = shutdown.notified() => break,
                _ = ticker.tick() => {
                    self.tick().await;
                }
            }
        }
    }
}

/// A cloneable handle to a running [`Autoscaler`].
#[derive(Debug, Clone)]
pub struct AutoscalerHandle {
    engine: Arc<Mutex<Engine>>,
    epoch: Instant,
    decisions: watch::Receiver<Option<ScaleDecision>>,
    shutdown: Arc<Notify>,
}

impl AutoscalerHandle {
    /// Pushes a sample taken now. Returns `false` if the engine rejected it.
    pub fn record(&self, sample: LoadSample) -> bool {
        let now = self.epoch.elapsed();
        self.engine.lock().record(now, sample)
    }

    /// A receiver of the latest decision.
    pub fn decisions(&self) -> watch::Receiver<Option<ScaleDecision>> {
        self.decisions.clone()
    }

    /// The latest decision.
    pub fn last_decision(&self) -> Option<ScaleDecision> {
        *self.decisions.borrow()
    }

    /// Stops [`Autoscaler::run`] (at its next await point).
    pub fn shutdown(&self) {
        self.shutdown.notify_one();
    }
}
