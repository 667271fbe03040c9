//! Production data drift monitoring, as teams run it with Evidently: what a
//! deployment receives and predicts, sampled per window, tested column by
//! column against a reference shipped with the model, with Evidently's tests
//! and defaults so that the verdicts mean the same.
//!
//! * [`Monitor::start`] runs a monitor: a uniform reservoir sample of each
//!   window's rows (constant memory), kept by a background task; on the
//!   request path a [`DriftHandle`] costs one atomic and, for a sampled
//!   request, a `try_send`. When a window closes its sample is tested and the
//!   [`DriftReport`] published ([`DriftHandle::latest`]), the gauges
//!   `convoy_drift_share` and `convoy_drift_detected` (label `model`) set,
//!   and the [`Webhook`] called on a transition into drift.
//! * [`DriftLayer`] samples a tower service's requests and responses through
//!   a [`Features`] extractor.
//! * [`stats`]: the tests (KS, normed Wasserstein, chi-squared,
//!   Jensen–Shannon, z) and Evidently's default choice between them;
//!   [`compare`] is Evidently's `DataDriftTable` over a reference and a
//!   current sample.
//! * [`DriftConfig`]: the settings, checked at construction with the field
//!   named in every error.
//!
//! # Evidently's defaults
//!
//! Per column, with at most 1 000 reference rows: numerical columns with more
//! than 5 distinct values get the two-sample Kolmogorov–Smirnov test (drift
//! when p ≤ 0.05), with 3–5 values chi-squared, with at most 2 the z-test;
//! categorical columns chi-squared (more than 2 values) or the z-test (drift
//! when p < 0.05). Above 1 000 reference rows numerical columns get the
//! Wasserstein distance normed by the reference's standard deviation (drift
//! when ≥ 0.1; Jensen–Shannon for at most 5 values) and categorical ones the
//! Jensen–Shannon distance (drift when ≥ 0.1). The dataset drifts when at
//! least half the columns do. Each threshold and test can be set per column,
//! per column type or for all columns, as in Evidently's options.
//!
//! # Example
//!
//! ```
//! use convoy_drift::{compare, stats::{ColumnKind, ColumnValues}, CompareOptions, Reference, ReferenceColumn};
//!
//! let reference = Reference {
//!     columns: vec![ReferenceColumn {
//!         name: "brightness".into(),
//!         kind: ColumnKind::Numerical,
//!         values: ColumnValues::Numerical((0..500).map(|i| (i % 100) as f64 / 100.0).collect()),
//!     }],
//! }
//! .checked()
//! .unwrap();
//! // Darker images: every value halved.
//! let current = ColumnValues::Numerical((0..300).map(|i| (i % 100) as f64 / 200.0).collect());
//! let result = compare(&reference, &[current], &CompareOptions::evidently_defaults(1));
//! assert_eq!(result.columns[0].stattest.name(), "ks");
//! assert!(result.columns[0].drifted && result.dataset_drift);
//! ```

// The README's example is compiled and run as a doc test.
#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod config;
mod layer;
mod monitor;
pub mod reference;
pub mod report;
pub mod stats;
mod webhook;

pub use config::{ConfigError, DriftConfig, DriftSettings, WebhookSettings};
pub use layer::{DriftFuture, DriftLayer, DriftService, Features};
pub use monitor::{
    columns_of, reservoir_slot, DriftHandle, Monitor, Row, Ticket, Value, DRAIN, QUEUE,
};
pub use reference::{Reference, ReferenceColumn, ReferenceError};
pub use report::{compare, ColumnDrift, CompareOptions, Comparison, DriftReport, WindowInfo};
pub use webhook::Webhook;
