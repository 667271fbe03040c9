//! `[[deployment]]`: the model, its versions, batching, device, replicas.

use std::path::{Path, PathBuf};
use std::time::Duration;

use convoy_batcher::WaitFor;
use example_registry::ModelSource;
use serde::{Deserialize, Serialize};

use super::de::{
    duration, fraction, positive_f64, positive_u32, positive_usize, ser_duration, weight,
};
use super::{DriftSection, RemoteConfig, RolloutPlan, IDENTITY};

/// `[[deployment]]`: one model under one name.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, try_from = "RawDeployment")]
pub struct DeploymentConfig {
    /// The name clients use: `/v1/models/{name}/...`, `/v2/models/{name}`.
    pub name: String,
    /// `identity` (built in) or the model package's name under `models_dir`
    /// (for a registry source: the registered model's name by default).
    pub model: String,
    /// The package directory, if not `<models_dir>/<model>`.
    pub source: Option<PathBuf>,
    /// A registry source (`source = "models:/<name>@<alias>"`, `/<stage>` or
    /// `/<version>`): its versions come from `[server.registry]`.
    pub registry: Option<ModelSource>,
    /// Versions and their traffic weights (a registry source: the version
    /// it resolves to at start).
    pub versions: Vec<VersionConfig>,
    /// A progressive rollout from the first version to the second, or, for
    /// a registry source that moves (a stage or alias), of every new
    /// version it points at.
    pub rollout: Option<RolloutPlan>,
    /// How requests are batched.
    pub batching: Batching,
    /// Where the model runs.
    pub device: DeviceConfig,
    /// How many replicas, and when to add or remove them.
    pub replicas: Replicas,
    /// Forward time the identity model simulates per batch (default 0).
    pub identity_delay: Duration,
    /// Forward time the identity model adds per item of a batch (default
    /// 0): a batch of `n` takes `identity_delay + n × identity_item_delay`,
    /// so a deployment has a known capacity (overload and soak tests).
    pub identity_item_delay: Duration,
    /// Time a new replica of the identity model takes before it serves
    /// (default 0): a cold start that costs no CPU, so autoscaling can be
    /// measured against the simulator's replica model.
    pub identity_start_delay: Duration,
    /// Production drift monitoring (`[deployment.drift]`), if configured.
    pub drift: Option<DriftSection>,
    /// Replicas on other machines (`[deployment.remote]`): served by
    /// `multi-model-front`, which loads no model.
    pub remote: Option<RemoteConfig>,
}

impl DeploymentConfig {
    /// Whether this is the built-in identity model.
    pub fn is_identity(&self) -> bool {
        self.model == IDENTITY
    }

    /// The package directory of `version`.
    pub fn version_dir(&self, models_dir: &Path, version: &str) -> PathBuf {
        self.source
            .clone()
            .unwrap_or_else(|| models_dir.join(&self.model))
            .join(version)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDeployment {
    name: String,
    #[serde(default)]
    model: Option<String>,
    #[serde(default)]
    source: Option<String>,
    #[serde(rename = "version", default)]
    versions: Vec<VersionConfig>,
    #[serde(default)]
    rollout: Option<RolloutPlan>,
    #[serde(default)]
    batching: Batching,
    #[serde(default)]
    device: DeviceConfig,
    #[serde(default)]
    replicas: Replicas,
    #[serde(default, deserialize_with = "duration")]
    identity_delay: Duration,
    #[serde(default, deserialize_with = "duration")]
    identity_item_delay: Duration,
    #[serde(default, deserialize_with = "duration")]
    identity_start_delay: Duration,
    #[serde(default)]
    drift: Option<DriftSection>,
    #[serde(default)]
    remote: Option<RemoteConfig>,
}

impl TryFrom<RawDeployment> for DeploymentConfig {
    type Error = String;

    fn try_from(raw: RawDeployment) -> Result<Self, String> {
        let name_ok = !raw.name.is_empty()
            && raw
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
        if !name_ok {
            return Err(format!(
                "name: {:?} must be non-empty ASCII letters, digits, '-', '_' or '.'",
                raw.name
            ));
        }
        let (source, registry) = match raw.source {
            None => (None, None),
            Some(s) => match s
                .parse::<ModelSource>()
                .map_err(|e| format!("source: {e}"))?
            {
                ModelSource::Path(p) => (Some(p), None),
                mlflow => (None, Some(mlflow)),
            },
        };
        let model = match (raw.model, &registry) {
            (Some(m), _) => m,
            (None, Some(ModelSource::Mlflow { name, .. })) => name.clone(),
            // The nodes serve the model; the front forwards by name.
            (None, None) if raw.remote.is_some() => raw.name.clone(),
            (None, _) => String::new(),
        };
        if model.is_empty() {
            return Err("model: must name a model package or \"identity\"".into());
        }
        if registry.is_some() {
            if model == IDENTITY {
                return Err("source: the identity model has no registry source".into());
            }
            if !raw.versions.is_empty() {
                return Err(
                    "version: a registry source names its versions itself (drop [[deployment.version]])"
                        .into(),
                );
            }
        }
        let mut versions = raw.versions;
        if versions.is_empty() {
            versions.push(VersionConfig {
                name: "1".into(),
                weight: 100.0,
            });
        }
        for (i, v) in versions.iter().enumerate() {
            if versions[..i].iter().any(|w| w.name == v.name) {
                return Err(format!("version: {:?} appears twice", v.name));
            }
        }
        if let (Some(plan), None) = (&raw.rollout, &registry) {
            if versions.len() != 2 {
                return Err(format!(
                    "rollout: needs exactly two versions (stable, canary), found {}",
                    versions.len()
                ));
            }
            if plan.steps.is_empty() {
                return Err("rollout.steps: at least one step".into());
            }
        } else if versions.iter().all(|v| v.weight == 0.0) {
            return Err("version.weight: at least one version needs a weight above 0".into());
        }
        if raw.replicas.min > raw.replicas.max {
            return Err(format!(
                "replicas.min ({}) is above replicas.max ({})",
                raw.replicas.min, raw.replicas.max
            ));
        }
        if raw.batching.profile && !raw.batching.adaptive {
            return Err(
                "batching.profile: needs batching.adaptive = true (the profile is where the \
                 adaptive cap starts)"
                    .into(),
            );
        }
        if raw.batching.wait_for == WaitFor::RecentLoad && raw.batching.max_wait.is_zero() {
            return Err(
                "batching.wait_for = \"recent_load\": needs batching.max_wait above zero (the \
                 longest a batch waits for the requests it expects back)"
                    .into(),
            );
        }
        if raw.identity_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_delay: only for model = \"identity\"".into());
        }
        if raw.identity_item_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_item_delay: only for model = \"identity\"".into());
        }
        if raw.identity_start_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_start_delay: only for model = \"identity\"".into());
        }
        if let Some(remote) = &raw.remote {
            if registry.is_some() {
                return Err(
                    "remote: a registry source is served by the nodes, not the front (drop source)"
                        .into(),
                );
            }
            if raw.drift.is_some() {
                return Err(
                    "remote: drift is monitored by the nodes (drop [deployment.drift])".into(),
                );
            }
            if raw.rollout.as_ref().is_some_and(|p| p.drift.is_some()) {
                return Err(
                    "rollout.drift: a front does not mirror requests; judge a remote canary by errors and latency (drop [deployment.rollout.drift])"
                        .into(),
                );
            }
            let names: Vec<&str> = versions.iter().map(|v| v.name.as_str()).collect();
            remote.check_versions(&names)?;
        }
        Ok(Self {
            name: raw.name,
            model,
            source,
            registry,
            versions,
            rollout: raw.rollout,
            batching: raw.batching,
            device: raw.device,
            replicas: raw.replicas,
            identity_delay: raw.identity_delay,
            identity_item_delay: raw.identity_item_delay,
            identity_start_delay: raw.identity_start_delay,
            drift: raw.drift,
            remote: raw.remote,
        })
    }
}

/// `[[deployment.version]]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VersionConfig {
    /// The version's name (its package directory, `1`, `2`...).
    pub name: String,
    /// Its share of the traffic (relative to the other versions').
    #[serde(default = "hundred", deserialize_with = "weight")]
    pub weight: f64,
}

fn hundred() -> f64 {
    100.0
}

/// `[deployment.batching]`: convoy-batcher's settings.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Batching {
    /// Most items (rows) in one batch; 1 turns batching off.
    #[serde(deserialize_with = "positive_usize")]
    pub max_batch_size: usize,
    /// How long the oldest queued request may wait for a fuller batch.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub max_wait: Duration,
    /// What a batch waits for within `max_wait`: `full` (default) waits for
    /// a full batch; `recent_load` only for as many requests as the replica
    /// held at once lately (queued or running), so that clients that send
    /// again as soon as they are answered share one batch, and a lone
    /// client never waits. `recent_load` needs `max_wait` above zero.
    pub wait_for: WaitFor,
    /// Batches running at once per replica.
    #[serde(deserialize_with = "positive_usize")]
    pub max_concurrent_batches: usize,
    /// Text models: requests share a batch when their token counts fall in
    /// the same power-of-two bucket (each batch is padded to its longest
    /// text), and every text up to this many tokens falls in the smallest
    /// bucket. A forward pass over short texts costs mostly per pass, not
    /// per token, so splitting them by length costs more than the padding
    /// saves (examples/README.md, "MiniLM: where the rest went, and what
    /// fixed it"). Default 32; 1 gives every power of two its own bucket.
    #[serde(deserialize_with = "positive_usize")]
    pub shortest_bucket: usize,
    /// Requests queued per replica; beyond it requests are refused (503).
    #[serde(deserialize_with = "positive_usize")]
    pub queue_capacity: usize,
    /// A request still queued after this is answered 504 unserved.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub queue_timeout: Duration,
    /// Keep batch sizes where measured throughput (items/s) is best, never
    /// above `max_batch_size` (convoy-batcher's adaptive cap).
    pub adaptive: bool,
    /// Time a forward pass at batch sizes 1, 2, 4, … and `max_batch_size`
    /// while each model warms up, so the adaptive cap starts at the fastest
    /// size instead of at `max_batch_size` (default off: loading takes a few
    /// passes more). Needs `adaptive`.
    pub profile: bool,
    /// One bad request fails alone (default): a batch the model fails as a
    /// whole is split and run again in halves until the failing requests
    /// are alone (convoy-batcher's failure isolation). `false`: the batch's
    /// error goes to every request in it, as Triton, Ray Serve and
    /// TorchServe do.
    pub failure_isolation: bool,
}

impl Default for Batching {
    fn default() -> Self {
        Self {
            max_batch_size: 16,
            max_wait: Duration::ZERO,
            wait_for: WaitFor::Full,
            max_concurrent_batches: 1,
            shortest_bucket: 32,
            queue_capacity: 256,
            queue_timeout: Duration::from_secs(10),
            adaptive: true,
            profile: false,
            failure_isolation: true,
        }
    }
}

/// `[deployment.device]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceConfig {
    /// `cpu`, `gpu` (fails without one) or `auto` (the GPU when present).
    pub kind: DeviceKind,
    /// Fraction of the device pool's memory (enforced) for each version:
    /// of the GPU's memory, or without one of `server.host_memory` (see
    /// there). A version's model (weights and activations) must fit in it.
    #[serde(deserialize_with = "fraction")]
    pub fraction: f64,
    /// Weight of each version in the compute gate (≥ 1).
    #[serde(deserialize_with = "positive_u32")]
    pub compute_weight: u32,
    /// libtorch intra-op threads of the model (CPU).
    #[serde(deserialize_with = "positive_usize")]
    pub intra_op_threads: usize,
}

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            kind: DeviceKind::Auto,
            fraction: 0.1,
            compute_weight: 1,
            intra_op_threads: 1,
        }
    }
}

/// Where a model runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceKind {
    /// The host CPU.
    Cpu,
    /// The GPU; an error at start without one.
    Gpu,
    /// The GPU when there is one, the CPU otherwise.
    Auto,
}

/// `[deployment.replicas]`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Replicas {
    /// Replicas kept at least (≥ 1: the server never scales a model to zero).
    #[serde(deserialize_with = "positive_u32")]
    pub min: u32,
    /// Replicas at most.
    #[serde(deserialize_with = "positive_u32")]
    pub max: u32,
    /// What the autoscaler aims at.
    pub policy: Policy,
    /// `latency_slo`: the p99 latency kept under; `adaptive`: the latency
    /// every request is judged against.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub slo: Duration,
    /// `target_ongoing`: requests in flight per replica.
    #[serde(deserialize_with = "positive_f64")]
    pub target_ongoing: f64,
    /// The `max` the file asked for, when the server clipped it to what the
    /// hardware runs at once (see [`crate::compute`]); not read from files.
    #[serde(default, skip_deserializing, skip_serializing_if = "Option::is_none")]
    pub configured_max: Option<u32>,
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: 1,
            max: 1,
            policy: Policy::LatencySlo,
            slo: Duration::from_millis(500),
            target_ongoing: 8.0,
            configured_max: None,
        }
    }
}

/// The autoscaling policy of a deployment's versions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Policy {
    /// Keep the p99 callers feel under `slo` (convoy-autoscale `LatencySlo`).
    LatencySlo,
    /// Keep `target_ongoing` requests per replica (Ray Serve's rule).
    TargetOngoing,
    /// convoy-autoscale's default, `Adaptive`, given only `slo`: it learns
    /// the replicas' batch cost curve and cold start from their batchers.
    Adaptive,
}
