//! [`KubeScaler`]: convoy-autoscale's [`Scaler`] for a Deployment, through
//! its `scale` subresource.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use convoy_autoscale::{ReplicaCounts, Scaler};
use futures::future::BoxFuture;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::autoscaling::v1::Scale;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client};
use parking_lot::Mutex;
use serde_json::json;
use tokio::time::{Duration, Instant};
use tower::BoxError;

use crate::error::{check_name, Error, ErrorKind};
use crate::health::{ApiHealth, HealthCell};
use crate::leader::LeaderHandle;

/// The annotation the ReplicaSet controller reads to pick which pods go
/// first on a scale-down (lower cost goes first; default 0).
pub const POD_DELETION_COST: &str = "controller.kubernetes.io/pod-deletion-cost";

/// Load per pod, measured by the caller (for example convoy-remote's
/// `/metrics` signal), keyed by pod name.
#[derive(Debug, Clone, PartialEq)]
pub struct PodLoadSnapshot {
    /// When it was measured (tokio clock).
    pub taken_at: Instant,
    /// In-flight plus queued requests (or any load figure: only the order
    /// matters) per pod name.
    pub per_pod: HashMap<String, f64>,
}

/// Where [`KubeScaler`] reads the load per pod before a scale-down.
pub trait PodLoad: Send + Sync {
    /// The latest load per pod.
    fn snapshot(&self) -> PodLoadSnapshot;
}

impl<F> PodLoad for F
where
    F: Fn() -> PodLoadSnapshot + Send + Sync,
{
    fn snapshot(&self) -> PodLoadSnapshot {
        self()
    }
}

/// What the scaler last read from the API server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleSnapshot {
    /// `spec.replicas` of the scale subresource: replicas asked for,
    /// including those still starting.
    pub desired: u32,
    /// `status.replicas`: pods the Deployment has now.
    pub observed: u32,
    /// `status.selector`: the label selector of its pods.
    pub selector: String,
    /// `metadata.resourceVersion` of the read.
    pub resource_version: Option<String>,
    /// When it was read (tokio clock).
    pub read_at: Instant,
}

/// The source of the ready count reported by [`Scaler::replicas`], usually
/// the number of Ready endpoints of the EndpointSlice source. `None` means
/// unknown (the scaler then reports all replicas ready).
pub type ReadyCount = Arc<dyn Fn() -> Option<u32> + Send + Sync>;

/// convoy-autoscale's [`Scaler`] for one Deployment, through its `scale`
/// subresource (RBAC `deployments/scale` get and patch).
///
/// * Before scaling down it lists the Deployment's pods and marks the
///   least-loaded ones with [`POD_DELETION_COST`] (the others' earlier marks
///   are removed), so the ReplicaSet controller removes the idle replicas and
///   not the busiest. The patch of `spec.replicas` carries the
///   `resourceVersion` it was planned on: if someone else scaled meanwhile,
///   the write fails with [`ErrorKind::Conflict`] instead of acting on an old
///   count.
/// * It never scales down on stale data: the count is read fresh in every
///   [`scale_to`](Scaler::scale_to), and a scale-down is refused with
///   [`ErrorKind::Stale`] when the decision was made on another count than
///   the fresh one (no read yet, or someone scaled meanwhile: the next
///   evaluation sees the fresh count) or when the per-pod load is older than
///   [`max_load_age`](KubeScaler::max_load_age).
/// * When the API server cannot be reached, [`replicas`](Scaler::replicas)
///   keeps answering the last snapshot, writes fail with
///   [`ErrorKind::Unreachable`], and [`health`](KubeScaler::health) says
///   since when.
/// * With a [`LeaderHandle`], it writes only while this process holds the
///   Lease ([`ErrorKind::NotLeader`] otherwise).
pub struct KubeScaler {
    scales: Api<Deployment>,
    pods: Api<Pod>,
    deployment: String,
    load: Option<Arc<dyn PodLoad>>,
    ready: Option<ReadyCount>,
    leader: Option<LeaderHandle>,
    max_load_age: Duration,
    call_timeout: Duration,
    snapshot: Mutex<Option<ScaleSnapshot>>,
    health: HealthCell,
}

impl fmt::Debug for KubeScaler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubeScaler")
            .field("deployment", &self.deployment)
            .field("max_load_age", &self.max_load_age)
            .field("call_timeout", &self.call_timeout)
            .field("leader", &self.leader)
            .field("snapshot", &*self.snapshot.lock())
            .finish_non_exhaustive()
    }
}

/// What one [`KubeScaler::scale`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScaleOutcome {
    /// `spec.replicas` before.
    pub from: u32,
    /// `spec.replicas` after.
    pub to: u32,
    /// Pods marked to go first, least loaded first (scale-down only).
    pub marked: Vec<String>,
}

impl KubeScaler {
    /// A scaler for Deployment `deployment` in `namespace`.
    ///
    /// Fails with [`ErrorKind::Config`] naming the field when a name is not a
    /// Kubernetes object name.
    pub fn new(client: Client, namespace: &str, deployment: &str) -> Result<Self, Error> {
        check_name("namespace", namespace)?;
        check_name("deployment", deployment)?;
        Ok(Self {
            scales: Api::namespaced(client.clone(), namespace),
            pods: Api::namespaced(client, namespace),
            deployment: deployment.to_owned(),
            load: None,
            ready: None,
            leader: None,
            max_load_age: Duration::from_secs(30),
            call_timeout: Duration::from_secs(10),
            snapshot: Mutex::new(None),
            health: HealthCell::new("scaler", deployment),
        })
    }

    /// Reads the load per pod from `load` before each scale-down.
    pub fn pod_load(mut self, load: impl PodLoad + 'static) -> Self {
        self.load = Some(Arc::new(load));
        self
    }

    /// Reports `ready` as the ready count in [`Scaler::replicas`].
    pub fn ready_count(mut self, ready: impl Fn() -> Option<u32> + Send + Sync + 'static) -> Self {
        self.ready = Some(Arc::new(ready));
        self
    }

    /// Writes only while `leader` holds the Lease.
    pub fn leader(mut self, leader: LeaderHandle) -> Self {
        self.leader = Some(leader);
        self
    }

    /// The oldest per-pod load a scale-down may rest on (default 30 s).
    /// Fails when zero.
    pub fn max_load_age(mut self, age: Duration) -> Result<Self, Error> {
        if age.is_zero() {
            return Err(Error::config("max_load_age", "must be greater than zero"));
        }
        self.max_load_age = age;
        Ok(self)
    }

    /// The longest one API call may take before it counts as
    /// [`ErrorKind::Unreachable`] (default 10 s). Fails when zero.
    pub fn call_timeout(mut self, limit: Duration) -> Result<Self, Error> {
        if limit.is_zero() {
            return Err(Error::config("call_timeout", "must be greater than zero"));
        }
        self.call_timeout = limit;
        Ok(self)
    }

    /// The Deployment's name.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// The last successful read, kept while the API server is unreachable.
    pub fn snapshot(&self) -> Option<ScaleSnapshot> {
        self.snapshot.lock().clone()
    }

    /// Whether the API server answered the last call, and since when it
    /// has not.
    pub fn health(&self) -> ApiHealth {
        self.health.get()
    }

    /// One API call, bounded by `call_timeout` and recorded in the health.
    async fn api_call<T>(
        &self,
        context: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        self.health.call(self.call_timeout, context, call).await
    }

    fn store(&self, scale: &Scale) -> Result<ScaleSnapshot, Error> {
        let count = |v: Option<i32>, field: &str| {
            u32::try_from(v.unwrap_or(0))
                .map_err(|_| Error::new(ErrorKind::Api, format!("scale {field} is negative")))
        };
        let snapshot = ScaleSnapshot {
            desired: count(
                scale.spec.as_ref().and_then(|s| s.replicas),
                "spec.replicas",
            )?,
            observed: count(scale.status.as_ref().map(|s| s.replicas), "status.replicas")?,
            selector: scale
                .status
                .as_ref()
                .and_then(|s| s.selector.clone())
                .unwrap_or_default(),
            resource_version: scale.metadata.resource_version.clone(),
            read_at: Instant::now(),
        };
        metrics::gauge!("convoy_kube_replicas_desired", "deployment" => self.deployment.clone())
            .set(f64::from(snapshot.desired));
        *self.snapshot.lock() = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Reads the scale subresource now and keeps it as the snapshot.
    pub async fn refresh(&self) -> Result<ScaleSnapshot, Error> {
        let scale = self
            .api_call("get scale", self.scales.get_scale(&self.deployment))
            .await?;
        self.store(&scale)
    }

    /// Refreshes every `period`, forever (spawn it). Failures are logged and
    /// leave the last snapshot in place.
    pub async fn refresh_every(self: Arc<Self>, period: Duration) {
        let mut tick = tokio::time::interval(period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(error) = self.refresh().await {
                tracing::warn!(deployment = %self.deployment, %error, "scale refresh failed, keeping the last snapshot");
            }
        }
    }

    fn check_leader(&self) -> Result<(), Error> {
        match &self.leader {
            Some(leader) if !leader.is_leader() => Err(Error::new(
                ErrorKind::NotLeader,
                format!(
                    "lease {:?} is not held by {:?}",
                    leader.lease(),
                    leader.identity()
                ),
            )),
            _ => Ok(()),
        }
    }

    /// Sets `spec.replicas` to `n`, marking the least-loaded pods first on a
    /// scale-down; see the type's docs for the rules.
    ///
    /// Counted in `convoy_kube_scale_writes_total` and, by reason (the
    /// [`ErrorKind`]), `convoy_kube_scale_refused_total` (label
    /// `deployment`).
    pub async fn scale(&self, n: u32) -> Result<ScaleOutcome, Error> {
        let result = self.scale_once(n).await;
        let deployment = self.deployment.clone();
        match &result {
            Ok(outcome) if outcome.from != outcome.to => {
                metrics::counter!("convoy_kube_scale_writes_total", "deployment" => deployment)
                    .increment(1)
            }
            Ok(_) => {}
            Err(e) => metrics::counter!(
                "convoy_kube_scale_refused_total",
                "deployment" => deployment,
                "reason" => e.kind().as_str()
            )
            .increment(1),
        }
        result
    }

    async fn scale_once(&self, n: u32) -> Result<ScaleOutcome, Error> {
        self.check_leader()?;
        let target =
            i32::try_from(n).map_err(|_| Error::config("replicas", format!("{n} exceeds i32")))?;
        // The count the decision was made on (what `replicas` last said).
        let seen = self.snapshot.lock().as_ref().map(|s| s.desired);
        let current = self.refresh().await?;
        if n < current.desired && seen != Some(current.desired) {
            return Err(Error::new(
                ErrorKind::Stale,
                format!(
                    "the decision to go to {n} saw {seen:?} replicas of {} but it has {}: \
                     no scale-down before a decision on the fresh count",
                    self.deployment, current.desired
                ),
            ));
        }
        if n == current.desired {
            return Ok(ScaleOutcome {
                from: n,
                to: n,
                marked: Vec::new(),
            });
        }
        let marked = if n < current.desired {
            self.mark_least_loaded(&current, (current.desired - n) as usize)
                .await?
        } else {
            Vec::new()
        };
        // The leader may have been lost while we listed and marked.
        self.check_leader()?;
        let mut patch = json!({ "spec": { "replicas": target } });
        if let Some(rv) = &current.resource_version {
            // Precondition: a scale written since our read answers 409.
            patch["metadata"] = json!({ "resourceVersion": rv });
        }
        let scale = self
            .api_call(
                "patch scale",
                self.scales.patch_scale(
                    &self.deployment,
                    &PatchParams::default(),
                    &Patch::Merge(&patch),
                ),
            )
            .await?;
        let after = self.store(&scale)?;
        tracing::info!(deployment = %self.deployment, from = current.desired, to = after.desired, marked = ?marked, "scaled");
        Ok(ScaleOutcome {
            from: current.desired,
            to: after.desired,
            marked,
        })
    }

    /// Lists the pods, picks the `count` least loaded and marks them with a
    /// negative deletion cost (least loaded lowest); earlier marks on the
    /// other pods are removed so an old plan does not kill a now-busy pod.
    async fn mark_least_loaded(
        &self,
        current: &ScaleSnapshot,
        count: usize,
    ) -> Result<Vec<String>, Error> {
        let Some(load) = &self.load else {
            return Ok(Vec::new());
        };
        let load = load.snapshot();
        let age = Instant::now().saturating_duration_since(load.taken_at);
        if age > self.max_load_age {
            return Err(Error::new(
                ErrorKind::Stale,
                format!(
                    "per-pod load is {age:?} old (max_load_age {:?}): no scale-down of {}",
                    self.max_load_age, self.deployment
                ),
            ));
        }
        if current.selector.is_empty() {
            return Err(Error::new(
                ErrorKind::Api,
                format!("scale of {} has no status.selector", self.deployment),
            ));
        }
        let pods = self
            .api_call(
                "list pods",
                self.pods
                    .list(&ListParams::default().labels(&current.selector)),
            )
            .await?;
        let mut live: Vec<(String, f64, bool)> = pods
            .items
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let name = p.metadata.name.clone()?;
                let marked = p
                    .metadata
                    .annotations
                    .as_ref()
                    .is_some_and(|a| a.contains_key(POD_DELETION_COST));
                // A pod with no figure yet is new or not serving: least loaded.
                let l = load.per_pod.get(&name).copied().unwrap_or(0.0);
                Some((name, if l.is_finite() { l } else { f64::MAX }, marked))
            })
            .collect();
        // Ties broken by name so the plan is deterministic.
        live.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(&b.0)));
        let count = count.min(live.len());
        let mut marked = Vec::with_capacity(count);
        for (rank, (name, _, _)) in live.iter().take(count).enumerate() {
            let cost = (rank as i64) - (count as i64);
            let patch =
                json!({ "metadata": { "annotations": { POD_DELETION_COST: cost.to_string() } } });
            self.api_call(
                "patch pod deletion cost",
                self.pods
                    .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
            )
            .await?;
            marked.push(name.clone());
        }
        for (name, _, was_marked) in live.iter().skip(count) {
            if *was_marked {
                let patch = json!({ "metadata": { "annotations": { POD_DELETION_COST: null } } });
                self.api_call(
                    "clear pod deletion cost",
                    self.pods
                        .patch(name, &PatchParams::default(), &Patch::Merge(&patch)),
                )
                .await?;
            }
        }
        Ok(marked)
    }
}

impl Scaler for KubeScaler {
    fn replicas(&self) -> ReplicaCounts {
        let Some(snapshot) = self.snapshot.lock().clone() else {
            return ReplicaCounts::ready(0);
        };
        let ready = self
            .ready
            .as_ref()
            .and_then(|r| r())
            .unwrap_or(snapshot.desired);
        ReplicaCounts::new(snapshot.desired, ready)
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        Box::pin(async move {
            self.scale(n).await?;
            Ok(())
        })
    }
}
