//! A drift monitor's configuration: checked when built, every error naming
//! the field.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::reference::{Reference, ReferenceError};
use crate::stats::{ColumnKind, StatTest, KS_EXACT_MAX_ROWS, STAT_TEST_NAMES};

/// The largest sample a window may keep: the exact KS p-value's range.
pub const MAX_SAMPLE_SIZE: usize = KS_EXACT_MAX_ROWS;

/// A drift monitor's settings as written (TOML/JSON): test names are strings,
/// the window a duration string (`"500ms"`, `"60s"`, `"5m"`, `"1h"`) or
/// seconds. [`DriftConfig::validate`] turns them into [`DriftSettings`].
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DriftConfig {
    /// How long one window collects samples before it is tested.
    #[serde(deserialize_with = "duration", default = "default_window")]
    pub window: Duration,
    /// Rows one window keeps (a uniform reservoir sample of the window's requests).
    #[serde(default = "default_sample_size")]
    pub sample_size: usize,
    /// Rows a window needs before it is tested (fewer: the window is reported
    /// as not tested).
    #[serde(default = "default_min_samples")]
    pub min_samples: usize,
    /// Share of drifted columns from which the dataset counts as drifted
    /// (Evidently's `drift_share`, default 0.5).
    #[serde(default = "default_drift_share")]
    pub drift_share: f64,
    /// Test for every column (Evidently's name), instead of the default choice.
    #[serde(default)]
    pub stattest: Option<String>,
    /// Test for numerical columns.
    #[serde(default)]
    pub num_stattest: Option<String>,
    /// Test for categorical columns.
    #[serde(default)]
    pub cat_stattest: Option<String>,
    /// Threshold for every column (a p-value or a distance, as the test uses).
    #[serde(default)]
    pub threshold: Option<f64>,
    /// Threshold for numerical columns.
    #[serde(default)]
    pub num_threshold: Option<f64>,
    /// Threshold for categorical columns.
    #[serde(default)]
    pub cat_threshold: Option<f64>,
    /// Per-column test and threshold, by column name.
    #[serde(default)]
    pub columns: BTreeMap<String, ColumnConfig>,
    /// The reference file (JSON, see [`Reference`]); required by
    /// [`DriftConfig::validate`] (a server may fill it in from the model's
    /// package).
    #[serde(default)]
    pub reference: Option<PathBuf>,
    /// A URL to POST the report to on every transition into drift.
    #[serde(default)]
    pub webhook: Option<String>,
    /// Attempts per webhook notification (1 = no retry).
    #[serde(default = "default_webhook_attempts")]
    pub webhook_attempts: u32,
    /// Timeout of one webhook attempt.
    #[serde(deserialize_with = "duration", default = "default_webhook_timeout")]
    pub webhook_timeout: Duration,
}

/// One column's overrides.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ColumnConfig {
    /// The test (Evidently's name).
    #[serde(default)]
    pub stattest: Option<String>,
    /// The threshold.
    #[serde(default)]
    pub threshold: Option<f64>,
}

fn default_window() -> Duration {
    Duration::from_secs(60)
}
fn default_sample_size() -> usize {
    1000
}
fn default_min_samples() -> usize {
    30
}
fn default_drift_share() -> f64 {
    0.5
}
fn default_webhook_attempts() -> u32 {
    3
}
fn default_webhook_timeout() -> Duration {
    Duration::from_secs(5)
}

/// Parses `"250ms"`, `"60s"`, `"5m"`, `"1h"` or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        (s, 1.0)
    };
    let n: f64 = num
        .trim()
        .parse()
        .map_err(|_| format!("{s:?} is not a duration (e.g. \"500ms\", \"60s\", \"5m\")"))?;
    Duration::try_from_secs_f64(n * scale).map_err(|e| format!("{s:?}: {e}"))
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Secs(f64),
    }
    match Raw::deserialize(d)? {
        Raw::Text(s) => parse_duration(&s).map_err(serde::de::Error::custom),
        Raw::Secs(n) => Duration::try_from_secs_f64(n).map_err(serde::de::Error::custom),
    }
}

/// An invalid drift configuration: the field and what is wrong with it.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigError {
    /// The field, e.g. `window` or `columns.label.stattest`.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "drift.{}: {}", self.field, self.message)
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        message: message.into(),
    }
}

/// The checked settings a [`Monitor`](crate::Monitor) runs with.
#[derive(Debug, Clone)]
pub struct DriftSettings {
    /// Window length (> 0).
    pub window: Duration,
    /// Rows kept per window (1..=[`MAX_SAMPLE_SIZE`]).
    pub sample_size: usize,
    /// Rows a window needs to be tested (1..=sample_size).
    pub min_samples: usize,
    /// Dataset drift when the share of drifted columns is at least this.
    pub drift_share: f64,
    /// The reference, one entry per column.
    pub reference: Reference,
    /// Per column (in the reference's order): the forced test, if any, and the
    /// threshold override, if any.
    pub per_column: Vec<(Option<StatTest>, Option<f64>)>,
    /// The webhook, if any.
    pub webhook: Option<WebhookSettings>,
}

/// A checked webhook.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `http://host[:port]/path`.
    pub url: http::Uri,
    /// Attempts per notification (>= 1).
    pub attempts: u32,
    /// Timeout of one attempt.
    pub timeout: Duration,
}

fn stattest(field: &str, name: &Option<String>) -> Result<Option<StatTest>, ConfigError> {
    match name {
        None => Ok(None),
        Some(n) if n == "auto" => Ok(None),
        Some(n) => StatTest::from_name(n).map(Some).ok_or_else(|| {
            err(
                field,
                format!(
                    "unknown test {n:?}: expected \"auto\" or one of {}",
                    STAT_TEST_NAMES.join(", ")
                ),
            )
        }),
    }
}

fn threshold(field: &str, t: Option<f64>) -> Result<Option<f64>, ConfigError> {
    match t {
        Some(t) if !t.is_finite() || t < 0.0 => Err(err(
            field,
            format!("{t} is not a threshold: expected a finite number >= 0"),
        )),
        t => Ok(t),
    }
}

impl DriftConfig {
    /// A configuration with the defaults and the given reference file.
    pub fn new(reference: impl Into<PathBuf>) -> Self {
        Self {
            window: default_window(),
            sample_size: default_sample_size(),
            min_samples: default_min_samples(),
            drift_share: default_drift_share(),
            stattest: None,
            num_stattest: None,
            cat_stattest: None,
            threshold: None,
            num_threshold: None,
            cat_threshold: None,
            columns: BTreeMap::new(),
            reference: Some(reference.into()),
            webhook: None,
            webhook_attempts: default_webhook_attempts(),
            webhook_timeout: default_webhook_timeout(),
        }
    }

    /// Checks every field and loads the reference file.
    pub fn validate(&self) -> Result<DriftSettings, ConfigError> {
        if self.window.is_zero() {
            return Err(err("window", "must be longer than 0"));
        }
        if self.sample_size == 0 || self.sample_size > MAX_SAMPLE_SIZE {
            return Err(err(
                "sample_size",
                format!(
                    "{} is out of range: expected 1..={MAX_SAMPLE_SIZE}",
                    self.sample_size
                ),
            ));
        }
        if self.min_samples == 0 || self.min_samples > self.sample_size {
            return Err(err(
                "min_samples",
                format!(
                    "{} is out of range: expected 1..=sample_size ({})",
                    self.min_samples, self.sample_size
                ),
            ));
        }
        if !(self.drift_share > 0.0 && self.drift_share <= 1.0) {
            return Err(err(
                "drift_share",
                format!("{} is out of range: expected (0, 1]", self.drift_share),
            ));
        }
        let all = stattest("stattest", &self.stattest)?;
        let num = stattest("num_stattest", &self.num_stattest)?;
        let cat = stattest("cat_stattest", &self.cat_stattest)?;
        for (field, test, kind) in [
            ("num_stattest", num, ColumnKind::Numerical),
            ("cat_stattest", cat, ColumnKind::Categorical),
        ] {
            if let Some(t) = test.filter(|t| !t.allows(kind)) {
                return Err(err(field, format!("{t} does not apply to {kind} columns")));
            }
        }
        let all_t = threshold("threshold", self.threshold)?;
        let num_t = threshold("num_threshold", self.num_threshold)?;
        let cat_t = threshold("cat_threshold", self.cat_threshold)?;
        let path = self.reference.as_ref().ok_or_else(|| {
            err(
                "reference",
                "missing: name the reference file (JSON columns of the training data's features)",
            )
        })?;
        let reference = Reference::load(path).map_err(|e| match e {
            ReferenceError::Io(e) => {
                err("reference", format!("cannot read {}: {e}", path.display()))
            }
            other => err("reference", format!("{}: {other}", path.display())),
        })?;
        for name in self.columns.keys() {
            if reference.column(name).is_none() {
                return Err(err(
                    format!("columns.{name}"),
                    format!(
                        "no column {name:?} in the reference (it has {})",
                        reference.names().collect::<Vec<_>>().join(", ")
                    ),
                ));
            }
        }
        let mut per_column = Vec::with_capacity(reference.columns.len());
        for col in &reference.columns {
            let over = self.columns.get(&col.name).cloned().unwrap_or_default();
            let field = format!("columns.{}.stattest", col.name);
            let forced = stattest(&field, &over.stattest)?;
            let (kind_test, kind_t) = match col.kind {
                ColumnKind::Numerical => (num, num_t),
                ColumnKind::Categorical => (cat, cat_t),
            };
            let test = forced.or(kind_test).or(all);
            if let Some(t) = test.filter(|t| !t.allows(col.kind)) {
                let field = if forced.is_some() {
                    field
                } else {
                    "stattest".to_string()
                };
                return Err(err(
                    field,
                    format!(
                        "{t} does not apply to the {} column {:?}",
                        col.kind, col.name
                    ),
                ));
            }
            let t = threshold(&format!("columns.{}.threshold", col.name), over.threshold)?
                .or(kind_t)
                .or(all_t);
            per_column.push((test, t));
        }
        let webhook = match &self.webhook {
            None => None,
            Some(url) => {
                let uri: http::Uri = url
                    .parse()
                    .map_err(|e| err("webhook", format!("{url:?} is not a URL: {e}")))?;
                if uri.scheme_str() != Some("http") || uri.host().is_none() {
                    return Err(err(
                        "webhook",
                        format!("{url:?}: expected http://host[:port]/path"),
                    ));
                }
                if self.webhook_attempts == 0 || self.webhook_attempts > 10 {
                    return Err(err(
                        "webhook_attempts",
                        format!("{} is out of range: expected 1..=10", self.webhook_attempts),
                    ));
                }
                if self.webhook_timeout.is_zero() {
                    return Err(err("webhook_timeout", "must be longer than 0"));
                }
                Some(WebhookSettings {
                    url: uri,
                    attempts: self.webhook_attempts,
                    timeout: self.webhook_timeout,
                })
            }
        };
        Ok(DriftSettings {
            window: self.window,
            sample_size: self.sample_size,
            min_samples: self.min_samples,
            drift_share: self.drift_share,
            reference,
            per_column,
            webhook,
        })
    }
}
