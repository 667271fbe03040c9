//! Rolling a new version out beside the serving one: the new version gets
//! its own replicas, batchers and tenant, a convoy-router [`Rollout`] moves
//! the split's weights through the deployment's steps while it analyses
//! the canary's errors and latency and, with `[deployment.rollout.drift]`,
//! its predictions against the stable version's on the same requests (a
//! share of the canary's requests is mirrored to the stable version through
//! convoy-router's [`ShadowLayer`], off the request path, and each answered
//! pair goes to a [`DriftMonitor`]). Promoted: the old version is drained
//! and retired. Rolled back: the new one is.
//!
//! [`Status`] keeps what `/v1/models` shows: the rollout's versions, state,
//! step, canary share and every event with its reason, and the registry's
//! latest news. The KServe v2 model metadata shows the same rollout, less
//! its events ([`RolloutSummary`], see [`crate::v2`]).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_router::rollout::drift::{DriftConfig, DriftMonitor, Embedding, Logits};
use convoy_router::rollout::{RolloutEvent, RolloutState};
use convoy_router::shadow::{Compare, Shadow, ShadowConfig, ShadowError, ShadowLayer};
use convoy_router::{Rollout, RolloutHandle, SplitHandle};
use example_tensor::{NamedTensor, TensorData};
use futures::future::BoxFuture;
use parking_lot::{Mutex, RwLock};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::config::{DriftPlan, RolloutPlan};
use crate::deploy::{rollout_config, Answer, Backend, Deployment, Item, Version, VersionService};
use crate::model::{Forward, Kind};

/// Events kept per rollout (the latest).
const MAX_EVENTS: usize = 64;

/// Registry messages kept (the latest).
const MAX_REGISTRY: usize = 16;

/// A deployment's rollout (running or the last one) and registry news.
#[derive(Debug, Default)]
pub struct Status {
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    rollout: Option<Run>,
    registry: Vec<String>,
}

#[derive(Debug)]
struct Run {
    stable: String,
    canary: String,
    steps: usize,
    started: Instant,
    started_unix_ms: u64,
    handle: Option<RolloutHandle>,
    /// The canary never got traffic: it did not start.
    failed: bool,
    events: Vec<RolloutEventInfo>,
}

/// A rollout as `/v1/models` shows it: its [`RolloutSummary`] and events.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutInfo {
    /// Versions, state, step and canary share.
    #[serde(flatten)]
    pub summary: RolloutSummary,
    /// Every event (the latest 64), oldest first.
    pub events: Vec<RolloutEventInfo>,
}

/// Where a rollout stands: what `/v1/models` shows of it beside its
/// events, and what the KServe v2 model metadata shows as
/// `parameters.rollout`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RolloutSummary {
    /// The version serving before the rollout.
    pub stable: String,
    /// The version rolled out.
    pub canary: String,
    /// When it began, milliseconds since the Unix epoch (the events'
    /// `at_ms` count from here).
    pub started_unix_ms: u64,
    /// `starting` (the canary's replicas start; no traffic yet),
    /// `progressing`, `paused`, `rolling_back`, `promoted`, `rolled_back`,
    /// or `failed` (the canary never started; `last_reason` says why).
    pub state: String,
    /// The step (0-based) while progressing or paused.
    pub step: Option<usize>,
    /// How many steps the plan has.
    #[serde(default)]
    pub steps: usize,
    /// The canary's share of the traffic now, percent.
    pub canary_percent: f64,
    /// The latest event's reason.
    pub last_reason: String,
}

/// One rollout event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RolloutEventInfo {
    /// Milliseconds since the rollout began.
    pub at_ms: u64,
    /// `StepStarted`, `AnalysisPassed`, `AnalysisFailed`, `Promoted`...
    pub kind: String,
    /// The canary's share after it, percent.
    pub canary_percent: f64,
    /// Why (thresholds and measured figures included).
    pub reason: String,
}

impl Status {
    /// A rollout from `stable` to `canary` through `steps` steps begins
    /// (before the canary starts).
    pub(crate) fn begin(&self, stable: &str, canary: &str, steps: usize) {
        self.inner.lock().rollout = Some(Run {
            stable: stable.into(),
            canary: canary.into(),
            steps,
            started: Instant::now(),
            started_unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            handle: None,
            failed: false,
            events: Vec::new(),
        });
    }

    /// The canary did not start (no traffic moved): the rollout is over.
    pub(crate) fn fail(&self, reason: String) {
        if let Some(run) = &mut self.inner.lock().rollout {
            run.failed = true;
            run.push(RolloutEventInfo {
                at_ms: run.started.elapsed().as_millis() as u64,
                kind: "StartFailed".into(),
                canary_percent: 0.0,
                reason,
            });
        }
    }

    /// The running rollout's handle.
    pub(crate) fn attach(&self, handle: RolloutHandle) {
        if let Some(run) = &mut self.inner.lock().rollout {
            run.handle = Some(handle);
        }
    }

    /// Logs every event of `deployment`'s rollout and keeps it.
    pub(crate) fn recorder(
        self: &Arc<Self>,
        deployment: &str,
    ) -> impl Fn(&RolloutEvent) + Send + Sync + 'static {
        let (status, deployment) = (Arc::clone(self), deployment.to_string());
        move |e| {
            tracing::info!(deployment = %deployment, kind = ?e.kind, step = e.step, percent = e.canary_percent, reason = %e.reason, "rollout");
            if let Some(run) = &mut status.inner.lock().rollout {
                let at_ms = e.at.saturating_duration_since(run.started).as_millis() as u64;
                run.push(RolloutEventInfo {
                    at_ms,
                    kind: format!("{:?}", e.kind),
                    canary_percent: e.canary_percent,
                    reason: e.reason.clone(),
                });
            }
        }
    }

    /// Keeps a registry message (and logs nothing: the caller did).
    pub(crate) fn registry_news(&self, message: String) {
        let mut inner = self.inner.lock();
        if inner.registry.len() == MAX_REGISTRY {
            inner.registry.remove(0);
        }
        inner.registry.push(message);
    }

    /// The registry's latest messages, oldest first.
    pub fn registry(&self) -> Vec<String> {
        self.inner.lock().registry.clone()
    }

    /// The rollout running now, or the last one.
    pub fn rollout(&self) -> Option<RolloutInfo> {
        let inner = self.inner.lock();
        let run = inner.rollout.as_ref()?;
        Some(RolloutInfo {
            summary: run.summary(),
            events: run.events.clone(),
        })
    }

    /// Where the rollout running now (or the last one) stands, without
    /// its events.
    pub fn summary(&self) -> Option<RolloutSummary> {
        self.inner.lock().rollout.as_ref().map(Run::summary)
    }

    /// The running rollout's handle (to pause, resume, abort or promote
    /// it), once its canary has started.
    pub fn handle(&self) -> Option<RolloutHandle> {
        self.inner.lock().rollout.as_ref()?.handle.clone()
    }
}

impl Run {
    fn push(&mut self, event: RolloutEventInfo) {
        if self.events.len() == MAX_EVENTS {
            self.events.remove(0);
        }
        self.events.push(event);
    }

    fn summary(&self) -> RolloutSummary {
        let state = match &self.handle {
            None if self.failed => return self.summarize("failed", None, 0.0),
            None => return self.summarize("starting", None, 0.0),
            Some(handle) => handle.state(),
        };
        let (name, step, canary_percent) = match state {
            RolloutState::Progressing {
                step,
                canary_percent,
            } => ("progressing", Some(step), canary_percent),
            RolloutState::Paused {
                step,
                canary_percent,
            } => ("paused", Some(step), canary_percent),
            RolloutState::RollingBack { canary_percent } => ("rolling_back", None, canary_percent),
            RolloutState::Promoted => ("promoted", None, 100.0),
            RolloutState::RolledBack => ("rolled_back", None, 0.0),
            _ => ("unknown", None, 0.0),
        };
        self.summarize(name, step, canary_percent)
    }

    fn summarize(&self, state: &str, step: Option<usize>, canary_percent: f64) -> RolloutSummary {
        RolloutSummary {
            stable: self.stable.clone(),
            canary: self.canary.clone(),
            started_unix_ms: self.started_unix_ms,
            state: state.into(),
            step,
            steps: self.steps,
            canary_percent,
            last_reason: self
                .events
                .last()
                .map(|e| e.reason.clone())
                .unwrap_or_default(),
        }
    }
}

/// The plan of a registry deployment without `[deployment.rollout]`.
pub(crate) fn default_plan() -> RolloutPlan {
    toml::from_str("steps = [10, 50, 100]").expect("the default plan is valid")
}

/// Rolls version `name` (`model`) out beside the serving version of `d`
/// and waits until it is promoted (the old version retired) or rolled back
/// (the new one retired). Requests already admitted by a retired version
/// finish first (at most `drain`).
pub(crate) async fn roll_out(
    d: &Deployment,
    name: &str,
    model: Arc<dyn Forward>,
    drain: Duration,
) -> Result<RolloutState, BoxError> {
    let plan = d.config.rollout.clone().unwrap_or_else(default_plan);
    let stable = d
        .versions()
        .first()
        .cloned()
        .ok_or_else(|| format!("deployment {}: no serving version", d.config.name))?;
    let label = format!("{}/{name}", d.config.name);
    d.status.begin(&stable.name, name, plan.steps.len());
    let prepared = prepare(d, &plan, &stable, name, model, drain).await;
    let (rollout, drift) = match prepared {
        Ok(prepared) => prepared,
        Err(e) => {
            d.status.fail(format!("{label} did not start: {e}"));
            return Err(e);
        }
    };
    let handle = rollout.start();
    d.status.attach(handle.clone());
    let end = handle.finished().await;
    if let Some(m) = &drift {
        // No more mirrors: the stable version may go now.
        m.on.store(false, Ordering::Relaxed);
        *m.target.write() = None;
    }
    match end {
        RolloutState::Promoted => d.retire(&stable.name, drain).await?,
        _ => d.retire(name, drain).await?,
    }
    Ok(end)
}

/// Starts the canary (at weight 0, with its drift mirror if the plan has
/// one) and waits for its first ready replica: the rollout to start.
async fn prepare(
    d: &Deployment,
    plan: &RolloutPlan,
    stable: &Version,
    name: &str,
    model: Arc<dyn Forward>,
    drain: Duration,
) -> Result<(Rollout<SplitHandle<Backend>>, Option<Mirror>), BoxError> {
    let label = format!("{}/{name}", d.config.name);
    let config = rollout_config(plan, stable.name.to_string(), name.to_string());
    let mut rollout =
        Rollout::new(d.handle.clone(), config)?.on_event(d.status.recorder(&d.config.name));
    let drift = match &plan.drift {
        Some(p) => Some(Mirror::new(p, d.kind, &label, stable.service.clone())?),
        None => None,
    };
    if let Some(m) = &drift {
        rollout = rollout.drift(m.monitor.clone());
    }
    let canary = d.add_version(name, model, |service| match &drift {
        Some(m) => Backend::new(Switch {
            mirrored: m.layer.layer(service.clone()),
            plain: service,
            on: Arc::clone(&m.on),
            chosen: None,
        }),
        None => Backend::new(service),
    })?;
    // Traffic moves only once the new version has a ready replica.
    let started = Instant::now();
    while convoy_autoscale::Scaler::replicas(&canary.replicas).ready == 0 {
        if started.elapsed() > Duration::from_secs(60) {
            d.retire(name, drain).await?;
            return Err("no ready replica within 60 s".into());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok((rollout, drift))
}

/// The canary's mirror to the stable version, feeding the drift monitor.
struct Mirror {
    monitor: DriftMonitor,
    layer: ShadowLayer<Gate, Item, RowDrift>,
    target: Arc<RwLock<Option<VersionService>>>,
    /// Whether the canary's requests are mirrored (until the rollout ends).
    on: Arc<AtomicBool>,
}

impl Mirror {
    fn new(
        plan: &DriftPlan,
        kind: Kind,
        label: &str,
        stable: VersionService,
    ) -> Result<Self, BoxError> {
        let monitor = DriftMonitor::new(DriftConfig {
            min_pairs: plan.min_pairs,
            min_top1_agreement: plan.min_top1_agreement,
            min_mean_cosine: plan.min_cosine,
            max_ks: plan.max_ks,
            max_psi: plan.max_psi,
            max_scores: (plan.min_pairs as usize).max(10_000),
            ..DriftConfig::default()
        })?;
        let target = Arc::new(RwLock::new(Some(stable)));
        let layer = ShadowLayer::with_cloner(
            Gate(Arc::clone(&target)),
            ShadowConfig {
                name: format!("{label} drift"),
                fraction: plan.mirror_fraction,
                max_in_flight: plan.max_mirrored,
                timeout: Duration::from_secs(30),
            },
            mirror_item,
        )?
        .compare(RowDrift {
            monitor: monitor.clone(),
            classify: kind == Kind::Classify,
        });
        Ok(Self {
            monitor,
            layer,
            target,
            on: Arc::new(AtomicBool::new(true)),
        })
    }
}

/// The canary's backend with a drift check: mirrored while the rollout
/// runs, plain afterwards (a promoted version keeps no mirror).
struct Switch {
    mirrored: Shadow<VersionService, Gate, Item, RowDrift>,
    plain: VersionService,
    on: Arc<AtomicBool>,
    /// The path `poll_ready` made ready, taken by `call`.
    chosen: Option<bool>,
}

impl Clone for Switch {
    /// The clone's readiness is its own.
    fn clone(&self) -> Self {
        Self {
            mirrored: self.mirrored.clone(),
            plain: self.plain.clone(),
            on: Arc::clone(&self.on),
            chosen: None,
        }
    }
}

impl Service<Item> for Switch {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Answer, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        let on = *self
            .chosen
            .get_or_insert_with(|| self.on.load(Ordering::Relaxed));
        if on {
            self.mirrored.poll_ready(cx)
        } else {
            self.plain.poll_ready(cx)
        }
    }

    fn call(&mut self, item: Item) -> Self::Future {
        match self.chosen.take().expect("poll_ready must be called first") {
            true => Box::pin(self.mirrored.call(item)),
            false => self.plain.call(item),
        }
    }
}

fn mirror_item(item: &Item) -> Item {
    Item {
        inputs: item.inputs.clone(),
        key: item.key,
        cost: item.cost,
        deadline: item.deadline,
        pinned: None,
        sticky: None,
    }
}

/// The stable version while the rollout runs; afterwards mirrors fail
/// at once (off the request path) instead of keeping it alive.
#[derive(Clone)]
struct Gate(Arc<RwLock<Option<VersionService>>>);

impl Service<Item> for Gate {
    type Response = Answer;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Answer, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, item: Item) -> Self::Future {
        let target = self.0.read().clone();
        Box::pin(async move {
            match target {
                Some(stable) => stable.oneshot(item).await,
                None => Err("the rollout is over; no mirror".into()),
            }
        })
    }
}

/// Records each row of a mirrored request: logits for classifiers,
/// the output vector (cosine) otherwise.
struct RowDrift {
    monitor: DriftMonitor,
    classify: bool,
}

/// The first output's rows, if it is FP32.
fn rows(outputs: &[NamedTensor]) -> Option<Vec<Vec<f32>>> {
    let first = outputs.first()?;
    let TensorData::Fp32(values) = &first.tensor.data else {
        return None;
    };
    let n = first.tensor.rows().max(1);
    let width = values.len() / n;
    if width == 0 {
        return None;
    }
    Some(values.chunks(width).map(<[f32]>::to_vec).collect())
}

impl Compare<Result<Answer, BoxError>, Answer> for RowDrift {
    type Kept = Vec<Vec<f32>>;

    fn keep(&self, canary: &Result<Answer, BoxError>) -> Option<Self::Kept> {
        rows(&canary.as_ref().ok()?.outputs)
    }

    fn compare(&self, canary: Self::Kept, stable: Result<Answer, ShadowError>) {
        let Some(stable) = stable.ok().and_then(|a| rows(&a.outputs)) else {
            return;
        };
        for (b, c) in stable.iter().zip(&canary) {
            if self.classify {
                self.monitor
                    .record(&Logits(b.as_slice()), &Logits(c.as_slice()));
            } else {
                self.monitor
                    .record(&Embedding(b.as_slice()), &Embedding(c.as_slice()));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use axum::body::Body;
    use axum::http::{Request, StatusCode};
    use example_kserve::{rest_routes, Limits};
    use example_tensor::Tensor;
    use serde_json::{json, Value};

    use super::*;
    use crate::model::Identity;
    use crate::v2::V2;
    use crate::{Config, Server};

    /// One identity deployment, one version ("1"), no rollout plan: a
    /// rollout gets the default plan (steps 10, 50, 100; 50 canary
    /// samples per verdict), so without traffic it stays at its first step.
    const ONE_VERSION: &str = "[[deployment]]\nname = \"m\"\nmodel = \"identity\"\n\
                               [deployment.device]\nkind = \"cpu\"\n";

    async fn metadata(app: &axum::Router, uri: &str) -> Value {
        let request = Request::get(uri).body(Body::empty()).unwrap();
        let answer = app.clone().oneshot(request).await.unwrap();
        assert_eq!(answer.status(), StatusCode::OK, "{uri}");
        let body = axum::body::to_bytes(answer.into_body(), usize::MAX)
            .await
            .unwrap();
        serde_json::from_slice(&body).unwrap()
    }

    /// Waits (at most 10 s) until `d`'s rollout is in `state`.
    async fn until_state(d: &Deployment, state: &str) {
        for _ in 0..2000 {
            if d.status.summary().is_some_and(|s| s.state == state) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("no rollout {state} within 10 s: {:?}", d.status.summary());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_v2_metadata_shows_both_versions_and_the_rollout_while_it_runs() {
        let server = Server::start(Config::parse(ONE_VERSION).unwrap())
            .await
            .unwrap();
        let app = rest_routes(Arc::new(V2(Arc::clone(&server))), Limits::default());
        let before = metadata(&app, "/v2/models/m").await;
        assert_eq!(before["versions"], json!(["1"]));
        assert!(before.get("parameters").is_none(), "{before:#}");

        let d = Arc::clone(&server.deployments[0]);
        let rolling = tokio::spawn(async move {
            let model = Arc::new(Identity::new(Duration::ZERO));
            roll_out(&d, "2", model, Duration::from_secs(5)).await
        });
        let d = &server.deployments[0];
        until_state(d, "progressing").await;
        for uri in ["/v2/models/m", "/v2/models/m/versions/2"] {
            let during = metadata(&app, uri).await;
            assert_eq!(during["versions"], json!(["1", "2"]), "{uri}");
            let rollout = &during["parameters"]["rollout"];
            assert_eq!(rollout["state"], "progressing", "{during:#}");
            assert_eq!(rollout["stable"], "1");
            assert_eq!(rollout["canary"], "2");
            assert_eq!(rollout["step"], 0);
            assert_eq!(rollout["steps"], 3);
            assert_eq!(rollout["canary_percent"], 10.0);
            assert!(rollout["started_unix_ms"].as_u64().unwrap() > 0);
            assert!(rollout.get("events").is_none(), "{during:#}");
            // The same names and figures as /v1/models' view, less its events.
            let v1 = serde_json::to_value(d.status.rollout().unwrap().summary).unwrap();
            assert_eq!(rollout["state"], v1["state"]);
            assert_eq!(rollout["canary_percent"], v1["canary_percent"]);
        }

        // Promoted: the old version is retired and the metadata says so.
        d.status.handle().unwrap().promote().await.unwrap();
        assert_eq!(rolling.await.unwrap().unwrap(), RolloutState::Promoted);
        let after = metadata(&app, "/v2/models/m").await;
        assert_eq!(after["versions"], json!(["2"]));
        let rollout = &after["parameters"]["rollout"];
        assert_eq!(rollout["state"], "promoted", "{after:#}");
        assert_eq!(rollout["canary_percent"], 100.0);
        assert_eq!(rollout["step"], Value::Null);
        assert!(rollout["last_reason"]
            .as_str()
            .unwrap()
            .contains("operator"));

        // A canary that cannot start: the rollout is over before any traffic.
        let model = Arc::new(Identity::new(Duration::ZERO));
        let refused = roll_out(d, "2", model, Duration::from_secs(5))
            .await
            .unwrap_err()
            .to_string();
        let failed = metadata(&app, "/v2/models/m").await;
        assert_eq!(failed["versions"], json!(["2"]));
        let rollout = &failed["parameters"]["rollout"];
        assert_eq!(rollout["state"], "failed", "{failed:#}");
        assert_eq!(rollout["canary_percent"], 0.0);
        let reason = rollout["last_reason"].as_str().unwrap();
        assert!(
            reason.contains("did not start") && reason.contains(&refused),
            "{reason}"
        );
        for d in &server.deployments {
            d.shutdown();
        }
    }

    fn named(shape: Vec<usize>, data: TensorData) -> NamedTensor {
        NamedTensor::new("out", Tensor::new(shape, data).unwrap())
    }

    #[test]
    fn each_row_of_the_first_output_is_one_pair() {
        let out = named(
            vec![2, 3],
            TensorData::Fp32(vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        );
        assert_eq!(
            rows(&[out]),
            Some(vec![vec![1.0, 2.0, 3.0], vec![4.0, 5.0, 6.0]])
        );
        // Not FP32, or nothing: no pairs.
        assert_eq!(
            rows(&[named(vec![1, 2], TensorData::Int64(vec![1, 2]))]),
            None
        );
        assert_eq!(rows(&[]), None);
    }

    #[test]
    fn rows_feed_the_drift_monitor_per_kind() {
        let monitor = DriftMonitor::new(DriftConfig {
            min_pairs: 1,
            min_top1_agreement: Some(0.9),
            max_psi: None,
            ..DriftConfig::default()
        })
        .unwrap();
        let hook = RowDrift {
            monitor: monitor.clone(),
            classify: true,
        };
        let answer = |data: Vec<f32>| Answer {
            version: "1".into(),
            outputs: vec![named(vec![2, 2], TensorData::Fp32(data))],
        };
        // Row 1 agrees (class 0 both), row 2 does not (class 1 vs 0).
        let canary = hook.keep(&Ok(answer(vec![3.0, 1.0, 2.0, 0.0]))).unwrap();
        hook.compare(canary, Ok(answer(vec![5.0, 0.0, 0.0, 1.0])));
        let report = monitor.report();
        assert_eq!(report.pairs, 2);
        assert_eq!(report.top1_agreement, Some(0.5));
        // A failed canary request is not compared.
        assert!(hook.keep(&Err("boom".into())).is_none());
    }
}
