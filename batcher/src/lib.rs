//! Dynamic batching for tower: turn a service that handles a *batch* of
//! requests into a service that handles *one* request, grouping concurrent
//! requests into batches.
//!
//! (Crate docs: work in progress.)

mod config;
mod error;
mod future;
mod handle;
mod layer;
mod queue;
mod results;
mod service;
mod shared;
mod stats;
mod telemetry;
mod worker;

pub use config::{BatchConfig, BatchConfigBuilder, OverflowPolicy};
pub use error::{
    BatchFailed, BatchPanicked, Closed, ConfigError, ConfigErrorKind, DeadlineExceeded, QueueFull,
};
pub use future::ResponseFuture;
pub use handle::BatchHandle;
pub use layer::{batch_fn, BatchLayer};
pub use results::IntoItemResults;
pub use service::Batch;
pub use stats::{
    BatchStats, Distribution, Rejections, ServiceTimeFit, SizeServiceTime, RECENT_SAMPLES,
};
pub use worker::Worker;

/// Names of the `metrics` emitted by every batcher; each carries a
/// `batcher` label with the configured name.
pub mod metric_names {
    pub use crate::telemetry::{
        BATCHES_TOTAL, BATCH_SERVICE_SECONDS, BATCH_SIZE, CANCELLED_TOTAL, IN_FLIGHT_BATCHES,
        QUEUE_DEPTH, QUEUE_WAIT_SECONDS, REJECTED_TOTAL,
    };
}

/// Priority of a request; higher priorities are dispatched first.
#[derive(
    Debug,
    Clone,
    Copy,
    Default,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    serde::Serialize,
    serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    /// Served after everything else (batch jobs, shadow traffic).
    Low = 0,
    /// The default.
    #[default]
    Normal = 1,
    /// Served first (interactive traffic).
    High = 2,
}
