//! Configuration errors.

use std::fmt;

/// What was wrong with a configuration value.
///
/// Returned by [`ConfigError::kind`]. New kinds may be added.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// `min_replicas` is greater than `max_replicas` (or a similar bound pair is inverted).
    InvalidBounds,
    /// A duration that must be positive is zero (for example the evaluation interval).
    ZeroDuration,
    /// A target, factor, threshold or rate is negative, zero where it must be positive,
    /// NaN or infinite.
    InvalidNumber,
    /// Two durations are inconsistent (for example a panic window longer than the stable window).
    InvalidWindow,
}

/// A configuration value was rejected at construction.
///
/// Every config struct in this crate is validated when the policy, engine or
/// replica set is built, so bad values surface here and never as a panic or a
/// surprising decision at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    field: &'static str,
    detail: String,
}

impl ConfigError {
    pub(crate) fn new(
        kind: ConfigErrorKind,
        field: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            field,
            detail: detail.into(),
        }
    }

    /// The kind of problem.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }

    /// The name of the offending configuration field.
    pub fn field(&self) -> &'static str {
        self.field
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid autoscaling config `{}`: {}",
            self.field, self.detail
        )
    }
}

impl std::error::Error for ConfigError {}

/// Checks that `value` is finite and strictly positive.
pub(crate) fn positive(field: &'static str, value: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value > 0.0 {
        Ok(())
    } else {
        Err(ConfigError::new(
            ConfigErrorKind::InvalidNumber,
            field,
            format!("must be finite and > 0, got {value}"),
        ))
    }
}

/// Checks that `value` is finite and within `[lo, hi]`.
pub(crate) fn within(field: &'static str, value: f64, lo: f64, hi: f64) -> Result<(), ConfigError> {
    if value.is_finite() && value >= lo && value <= hi {
        Ok(())
    } else {
        Err(ConfigError::new(
            ConfigErrorKind::InvalidNumber,
            field,
            format!("must be finite and within [{lo}, {hi}], got {value}"),
        ))
    }
}

/// Checks that a duration is non-zero.
pub(crate) fn non_zero(field: &'static str, value: std::time::Duration) -> Result<(), ConfigError> {
    if value.is_zero() {
        Err(ConfigError::new(
            ConfigErrorKind::ZeroDuration,
            field,
            "must be greater than zero",
        ))
    } else {
        Ok(())
    }
}
