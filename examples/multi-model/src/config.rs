//! The server's TOML configuration, in the vocabulary of Ray Serve and
//! Triton: per deployment the model, its versions and their traffic
//! weights (or a rollout plan), batching, the device share and replicas.
//!
//! Everything is checked while the file is read: unknown fields are
//! refused, values out of range fail where they are written, and every
//! error names the field and its line (`toml`'s spans; `tests/config.rs`
//! runs this, a doc test cannot: it runs outside the rpath to libtorch):
//!
//! ```no_run
//! let err = example_multi_model::Config::parse(
//!     "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\nmax_bach_size = 4\n",
//! )
//! .unwrap_err();
//! assert!(err.to_string().contains("line 4"), "{err}");
//! assert!(err.to_string().contains("max_bach_size"), "{err}");
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use example_registry::ModelSource;
use serde::{Deserialize, Deserializer, Serialize};
use toml::Spanned;

/// The name of the built-in model that echoes its inputs.
pub const IDENTITY: &str = "identity";

/// The whole configuration file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listening addresses, limits, where models live.
    #[serde(default)]
    pub server: ServerConfig,
    /// The models served, each under its own name.
    #[serde(rename = "deployment", default)]
    pub deployments: Vec<Spanned<DeploymentConfig>>,
}

/// `[server]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// HTTP address (REST: v1 routes, KServe v2, health, metrics).
    pub addr: SocketAddr,
    /// gRPC address (KServe v2 gRPC); none: no gRPC server.
    pub grpc_addr: Option<SocketAddr>,
    /// Where model packages live: `<models_dir>/<model>/<version>/model.json`.
    pub models_dir: PathBuf,
    /// Largest request body, bytes (413 above it).
    #[serde(deserialize_with = "positive_u64")]
    pub body_limit: u64,
    /// A request not answered within this is answered 504; the batcher
    /// drops it unserved if it is still queued then.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Pre- and post-processing tasks running at once (image decoding,
    /// tokenizing) on tokio's blocking threads.
    #[serde(deserialize_with = "positive_usize")]
    pub blocking_tasks: usize,
    /// Host memory of the device pool when there is no GPU, bytes.
    #[serde(deserialize_with = "positive_u64")]
    pub host_memory: u64,
    /// Batches the device pool runs at once, over every deployment and
    /// replica (its compute gate). Default 4.
    #[serde(deserialize_with = "positive_u32")]
    pub compute_slots: u32,
    /// `[server.registry]`: the MLflow tracking server that `models:/`
    /// sources are resolved against.
    pub registry: Option<RegistryConfig>,
    /// `[server.uploads]`: limits on the images and texts of one v1 request.
    pub uploads: UploadLimits,
}

/// `[server.uploads]`: what one v1 `classify`, `detect` or `embed` request
/// may carry, checked as the body is read and before anything is decoded.
/// The whole body is bounded by `server.body_limit` besides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UploadLimits {
    /// Parts (multipart parts, or base64 images of a JSON body) in one
    /// request at most; more is answered 413.
    #[serde(deserialize_with = "positive_usize")]
    pub max_parts: usize,
    /// Bytes of one part at most (an image file, a decoded base64 image, a
    /// text part); a larger part is answered 413 on its own.
    #[serde(deserialize_with = "positive_u64")]
    pub max_part_bytes: u64,
    /// Pixels (width × height, read from the image's header) of one image
    /// at most; a larger image is answered 413 on its own.
    #[serde(deserialize_with = "positive_u64")]
    pub max_pixels: u64,
}

impl Default for UploadLimits {
    /// 64 parts, 8 MiB per part, 40 megapixels per image.
    fn default() -> Self {
        Self {
            max_parts: 64,
            max_part_bytes: 8 << 20,
            max_pixels: 40_000_000,
        }
    }
}

/// `[server.registry]`: where `models:/` sources come from and how often
/// a stage or alias is polled for a new version.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegistryConfig {
    /// The MLflow tracking server, `http://host:port`.
    #[serde(deserialize_with = "tracking_uri")]
    pub uri: String,
    /// Downloaded, verified versions: `<cache_dir>/<model>/<version>/`.
    #[serde(default = "default_cache_dir")]
    pub cache_dir: PathBuf,
    /// How often a stage or alias is asked for its version.
    #[serde(
        deserialize_with = "positive_duration",
        default = "default_poll_interval"
    )]
    pub poll_interval: Duration,
    /// Bound on every request to the registry (a registry that hangs
    /// counts as unavailable after it).
    #[serde(
        deserialize_with = "positive_duration",
        default = "default_registry_timeout"
    )]
    pub timeout: Duration,
}

fn default_cache_dir() -> PathBuf {
    PathBuf::from("models/.registry")
}

fn default_poll_interval() -> Duration {
    Duration::from_secs(5)
}

fn default_registry_timeout() -> Duration {
    Duration::from_secs(10)
}

fn tracking_uri<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let uri = String::deserialize(d)?;
    example_registry::MlflowClient::new(&uri).map_err(serde::de::Error::custom)?;
    Ok(uri)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            addr: ([127, 0, 0, 1], 8000).into(),
            grpc_addr: None,
            models_dir: PathBuf::from("models"),
            body_limit: 16 << 20,
            request_timeout: Duration::from_secs(30),
            blocking_tasks: 4,
            host_memory: 1 << 30,
            compute_slots: 4,
            registry: None,
            uploads: UploadLimits::default(),
        }
    }
}

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
        if raw.identity_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_delay: only for model = \"identity\"".into());
        }
        if raw.identity_item_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_item_delay: only for model = \"identity\"".into());
        }
        if raw.identity_start_delay > Duration::ZERO && model != IDENTITY {
            return Err("identity_start_delay: only for model = \"identity\"".into());
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

/// `[deployment.rollout]`: traffic moves from the stable version to the
/// canary through `steps` (percent), each held at least `step`, promoted
/// while the canary's errors, latency (and, with `[deployment.rollout.drift]`,
/// its predictions) stay in bounds, rolled back otherwise.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawRolloutPlan")]
pub struct RolloutPlan {
    /// Canary percentages, ascending, each in (0, 100].
    pub steps: Vec<f64>,
    /// Least time at each step.
    #[serde(serialize_with = "ser_duration")]
    pub step: Duration,
    /// How often the step is analysed (default: a fifth of `step`).
    #[serde(serialize_with = "ser_duration")]
    pub analysis_interval: Duration,
    /// Canary requests (and drift pairs) needed before any verdict.
    pub min_samples: u64,
    /// Highest canary error rate that passes, in [0, 1].
    pub max_error_rate: f64,
    /// The canary's p99 latency bound.
    pub latency: P99Limit,
    /// Failed analyses that start the rollback.
    pub failure_limit: u32,
    /// The rollback lowers the canary to 0 in this many steps...
    pub rollback_steps: u32,
    /// ...this far apart (default: half of `step`).
    #[serde(serialize_with = "ser_duration")]
    pub rollback_interval: Duration,
    /// The prediction-drift check, if any.
    pub drift: Option<DriftPlan>,
}

/// The canary's p99 latency bound.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum P99Limit {
    /// At most this (`max_p99 = "250ms"`).
    Absolute(#[serde(serialize_with = "ser_duration")] Duration),
    /// At most the stable's p99 times this (`max_p99_factor = 2.0`, the default).
    StableFactor(f64),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRolloutPlan {
    #[serde(deserialize_with = "steps")]
    steps: Vec<f64>,
    #[serde(
        alias = "step_duration",
        deserialize_with = "positive_duration",
        default = "thirty_seconds"
    )]
    step: Duration,
    #[serde(default, deserialize_with = "some_positive_duration")]
    analysis_interval: Option<Duration>,
    #[serde(default = "fifty", deserialize_with = "positive_u64")]
    min_samples: u64,
    #[serde(default = "one_percent", deserialize_with = "rate")]
    max_error_rate: f64,
    #[serde(default, deserialize_with = "some_positive_duration")]
    max_p99: Option<Duration>,
    #[serde(default, deserialize_with = "some_positive_f64")]
    max_p99_factor: Option<f64>,
    #[serde(default = "three", deserialize_with = "positive_u32")]
    failure_limit: u32,
    #[serde(default = "four", deserialize_with = "positive_u32")]
    rollback_steps: u32,
    #[serde(default, deserialize_with = "some_positive_duration")]
    rollback_interval: Option<Duration>,
    #[serde(default)]
    drift: Option<DriftPlan>,
}

impl TryFrom<RawRolloutPlan> for RolloutPlan {
    type Error = String;

    fn try_from(raw: RawRolloutPlan) -> Result<Self, String> {
        let latency = match (raw.max_p99, raw.max_p99_factor) {
            (Some(_), Some(_)) => {
                return Err("rollout: set max_p99 or max_p99_factor, not both".into())
            }
            (Some(d), None) => P99Limit::Absolute(d),
            (None, f) => P99Limit::StableFactor(f.unwrap_or(2.0)),
        };
        let floor = Duration::from_millis(1);
        Ok(Self {
            steps: raw.steps,
            step: raw.step,
            analysis_interval: raw.analysis_interval.unwrap_or((raw.step / 5).max(floor)),
            min_samples: raw.min_samples,
            max_error_rate: raw.max_error_rate,
            latency,
            failure_limit: raw.failure_limit,
            rollback_steps: raw.rollback_steps,
            rollback_interval: raw.rollback_interval.unwrap_or((raw.step / 2).max(floor)),
            drift: raw.drift,
        })
    }
}

fn thirty_seconds() -> Duration {
    Duration::from_secs(30)
}

fn fifty() -> u64 {
    50
}

fn one_percent() -> f64 {
    0.01
}

fn three() -> u32 {
    3
}

fn four() -> u32 {
    4
}

/// `[deployment.rollout.drift]`: while a canary runs, a share of its
/// requests is also sent to the stable version (off the request path) and
/// the two answers are compared: top-1 agreement for classifiers, cosine
/// of the outputs for encoders, KS and PSI on the top class's probability.
/// Each check is on when its threshold is set; at least one must be.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, try_from = "RawDriftPlan")]
pub struct DriftPlan {
    /// Pairs needed per check before a verdict.
    pub min_pairs: u64,
    /// Lowest share of pairs with the same top class, in [0, 1].
    pub min_top1_agreement: Option<f64>,
    /// Lowest mean cosine of the two outputs, in [-1, 1].
    pub min_cosine: Option<f64>,
    /// Highest Kolmogorov–Smirnov D of the top-class probabilities, in [0, 1].
    pub max_ks: Option<f64>,
    /// Highest population stability index of the same, ≥ 0.
    pub max_psi: Option<f64>,
    /// Share of the canary's requests mirrored to the stable version, in (0, 1].
    pub mirror_fraction: f64,
    /// Mirrored requests in flight at most (more are skipped, never queued).
    pub max_mirrored: usize,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDriftPlan {
    #[serde(default = "hundred_pairs", deserialize_with = "positive_u64")]
    min_pairs: u64,
    #[serde(default, deserialize_with = "some_rate")]
    min_top1_agreement: Option<f64>,
    #[serde(default, deserialize_with = "some_cosine")]
    min_cosine: Option<f64>,
    #[serde(default, deserialize_with = "some_rate")]
    max_ks: Option<f64>,
    #[serde(default, deserialize_with = "some_non_negative")]
    max_psi: Option<f64>,
    #[serde(default = "one", deserialize_with = "fraction")]
    mirror_fraction: f64,
    #[serde(default = "sixty_four", deserialize_with = "positive_usize")]
    max_mirrored: usize,
}

impl TryFrom<RawDriftPlan> for DriftPlan {
    type Error = String;

    fn try_from(raw: RawDriftPlan) -> Result<Self, String> {
        if [
            raw.min_top1_agreement,
            raw.min_cosine,
            raw.max_ks,
            raw.max_psi,
        ]
        .iter()
        .all(Option::is_none)
        {
            return Err(
                "rollout.drift: set at least one of min_top1_agreement, min_cosine, max_ks, max_psi"
                    .into(),
            );
        }
        Ok(Self {
            min_pairs: raw.min_pairs,
            min_top1_agreement: raw.min_top1_agreement,
            min_cosine: raw.min_cosine,
            max_ks: raw.max_ks,
            max_psi: raw.max_psi,
            mirror_fraction: raw.mirror_fraction,
            max_mirrored: raw.max_mirrored,
        })
    }
}

fn hundred_pairs() -> u64 {
    100
}

fn one() -> f64 {
    1.0
}

fn sixty_four() -> usize {
    64
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
    /// Batches running at once per replica.
    #[serde(deserialize_with = "positive_usize")]
    pub max_concurrent_batches: usize,
    /// Requests queued per replica; beyond it requests are refused (503).
    #[serde(deserialize_with = "positive_usize")]
    pub queue_capacity: usize,
    /// A request still queued after this is answered 504 unserved.
    #[serde(deserialize_with = "duration", serialize_with = "ser_duration")]
    pub queue_timeout: Duration,
    /// Keep batch sizes where measured throughput (items/s) is best, never
    /// above `max_batch_size` (convoy-batcher's adaptive cap).
    pub adaptive: bool,
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
            max_concurrent_batches: 1,
            queue_capacity: 256,
            queue_timeout: Duration::from_secs(10),
            adaptive: true,
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
    /// Fraction of the device pool's memory (enforced) for each version.
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
}

impl Default for Replicas {
    fn default() -> Self {
        Self {
            min: 1,
            max: 1,
            policy: Policy::LatencySlo,
            slo: Duration::from_millis(500),
            target_ongoing: 8.0,
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

/// A configuration that cannot be used; its message names the field and
/// the line.
#[derive(Debug)]
pub struct ConfigError {
    message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

impl ConfigError {
    fn at(source: &str, span: std::ops::Range<usize>, message: impl fmt::Display) -> Self {
        let line = source[..span.start.min(source.len())].matches('\n').count() + 1;
        Self {
            message: format!("configuration error at line {line}: {message}"),
        }
    }
}

impl Config {
    /// Reads and checks a TOML file. Relative paths in it (`models_dir`,
    /// `[server.registry] cache_dir`, a deployment's `source` directory,
    /// and their defaults) are taken relative to the file's own folder, as
    /// Prometheus, Envoy and cargo do: the server finds its models whatever
    /// folder it is started from.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("{}: {e}", path.display()),
        })?;
        let mut config = Self::parse(&text).map_err(|e| ConfigError {
            message: format!("{}: {e}", path.display()),
        })?;
        let folder = path.parent().unwrap_or(Path::new(""));
        config.resolve_paths(folder);
        Ok(config)
    }

    /// Makes every relative path of the configuration relative to `folder`
    /// instead (what [`Config::load`] does with the file's folder).
    pub fn resolve_paths(&mut self, folder: &Path) {
        let resolve = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = folder.join(&*p);
            }
        };
        resolve(&mut self.server.models_dir);
        if let Some(registry) = &mut self.server.registry {
            resolve(&mut registry.cache_dir);
        }
        for d in &mut self.deployments {
            if let Some(source) = &mut d.get_mut().source {
                resolve(source);
            }
        }
    }

    /// Parses and checks TOML text. Relative paths stay as written
    /// (relative to the working directory); see [`Config::resolve_paths`].
    pub fn parse(text: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| match e.span() {
            Some(span) => ConfigError::at(text, span, e.message()),
            None => ConfigError {
                message: format!("configuration error: {}", e.message()),
            },
        })?;
        for (i, d) in config.deployments.iter().enumerate() {
            if config.deployments[..i]
                .iter()
                .any(|e| e.get_ref().name == d.get_ref().name)
            {
                return Err(ConfigError::at(
                    text,
                    d.span(),
                    format!("deployment.name: {:?} appears twice", d.get_ref().name),
                ));
            }
        }
        for d in &config.deployments {
            if d.get_ref().registry.is_some() && config.server.registry.is_none() {
                return Err(ConfigError::at(
                    text,
                    d.span(),
                    format!(
                        "deployment {:?}: a models:/ source needs [server.registry] uri = \"http://host:port\"",
                        d.get_ref().name
                    ),
                ));
            }
        }
        if config.deployments.is_empty() {
            return Err(ConfigError {
                message: "configuration error: no [[deployment]]".into(),
            });
        }
        Ok(config)
    }

    /// The deployments, without their spans.
    pub fn deployments(&self) -> impl Iterator<Item = &DeploymentConfig> {
        self.deployments.iter().map(|d| d.get_ref())
    }
}

/// Parses `250ms`, `1.5s`, `2m`, `100us`, `0`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .ok_or_else(|| format!("{s:?}: a duration needs a unit (ns, us, ms, s, m, h)"))?;
    let (number, unit) = s.split_at(split);
    let n: f64 = number
        .parse()
        .map_err(|_| format!("{s:?}: {number:?} is not a number"))?;
    let scale = match unit {
        "ns" => 1e-9,
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "m" => 60.0,
        "h" => 3600.0,
        _ => {
            return Err(format!(
                "{s:?}: unknown unit {unit:?} (ns, us, ms, s, m, h)"
            ))
        }
    };
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    parse_duration(&s).map_err(serde::de::Error::custom)
}

fn ser_duration<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{}ms", d.as_secs_f64() * 1e3))
}

fn positive_usize<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    let n = i64::deserialize(d)?;
    usize::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be at least 1, got {n}")))
}

fn positive_u32<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    let n = i64::deserialize(d)?;
    u32::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be 1 to {}, got {n}", u32::MAX)))
}

fn positive_u64<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
    let n = i64::deserialize(d)?;
    u64::try_from(n)
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| serde::de::Error::custom(format!("must be at least 1, got {n}")))
}

fn number<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Number {
        Int(i64),
        Float(f64),
    }
    Ok(match Number::deserialize(d)? {
        Number::Int(i) => i as f64,
        Number::Float(f) => f,
    })
}

fn positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be above 0, got {x}"
        )))
    }
}

fn weight<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x >= 0.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "a weight is 0 or more, got {x}"
        )))
    }
}

fn fraction<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && x > 0.0 && x <= 1.0 {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "a fraction in (0, 1], got {x}"
        )))
    }
}

fn steps<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    let steps = Vec::<f64>::deserialize(d)?;
    let ascending = steps.windows(2).all(|w| w[0] < w[1]);
    if !ascending || steps.iter().any(|&s| !(s > 0.0 && s <= 100.0)) {
        return Err(serde::de::Error::custom(format!(
            "steps are ascending percentages in (0, 100], got {steps:?}"
        )));
    }
    Ok(steps)
}

fn positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let x = duration(d)?;
    if x.is_zero() {
        return Err(serde::de::Error::custom("must be above 0"));
    }
    Ok(x)
}

fn some_positive_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    positive_duration(d).map(Some)
}

fn some_positive_f64<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    positive_f64(d).map(Some)
}

fn in_range<'de, D: Deserializer<'de>>(d: D, lo: f64, hi: f64) -> Result<f64, D::Error> {
    let x = number(d)?;
    if x.is_finite() && (lo..=hi).contains(&x) {
        Ok(x)
    } else {
        Err(serde::de::Error::custom(format!(
            "must be in [{lo}, {hi}], got {x}"
        )))
    }
}

fn rate<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    in_range(d, 0.0, 1.0)
}

fn some_rate<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, 0.0, 1.0).map(Some)
}

fn some_cosine<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, -1.0, 1.0).map(Some)
}

fn some_non_negative<'de, D: Deserializer<'de>>(d: D) -> Result<Option<f64>, D::Error> {
    in_range(d, 0.0, f64::MAX).map(Some)
}
