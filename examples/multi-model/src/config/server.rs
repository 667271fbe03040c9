//! `[server]`: listening addresses, limits, the registry, uploads.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use super::de::{duration, positive_duration, positive_u32, positive_u64, positive_usize};

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
    /// Host memory of the device pool when there is no GPU, bytes. A
    /// TorchScript model version on the CPU gets a tenant of
    /// `device.fraction × host_memory` bytes, which every byte libtorch
    /// allocates for it is charged to (its weights, then each forward
    /// pass's activations): it must hold the weights plus the largest
    /// batch's activations (measured through the server: MiniLM 90 MB of
    /// weights, 325 MB at 32 rows of 128 tokens; ResNet-50 102 MB, 144 MB
    /// at 4 images; YOLOv8n 13 MB, 55 MB at 2 images),
    /// and the quotas of all versions together (a canary's too) at most
    /// the pool's budget, 90 % of `host_memory`. A quota under 1 MiB,
    /// quotas past the budget, or weights past the quota fail at start
    /// naming these fields; a batch past it fails with the quota error
    /// (503), split by failure isolation first. The identity model's
    /// tenant takes 16 MiB.
    #[serde(deserialize_with = "positive_u64")]
    pub host_memory: u64,
    /// Batches the device pool runs at once, over every deployment and
    /// replica (its compute gate). Default 4.
    #[serde(deserialize_with = "positive_u32")]
    pub compute_slots: u32,
    /// CPU cores the server's forward passes may use (default: the
    /// machine's). The CPU models share `cores / intra_op_threads` compute
    /// threads, and no deployment scales past them (see [`crate::compute`]).
    pub cores: Option<std::num::NonZeroUsize>,
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
            cores: None,
            registry: None,
            uploads: UploadLimits::default(),
        }
    }
}
