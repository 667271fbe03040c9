//! Configuration errors shared by every part of the crate.

use std::fmt;

/// What was wrong with a configuration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ConfigErrorKind {
    /// No backends were given.
    NoBackends,
    /// Every weight is zero: nothing could ever be routed.
    AllWeightsZero,
    /// A weight is negative, NaN or infinite.
    InvalidWeight,
    /// Two backends share a name.
    DuplicateBackend,
    /// A name does not match any backend.
    UnknownBackend,
    /// More backends than the router supports (4,096).
    TooManyBackends,
    /// A fraction, percentage or factor is out of range.
    OutOfRange,
    /// A duration or count is zero where it must be positive.
    Zero,
}

/// A configuration was rejected when it was built or updated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    kind: ConfigErrorKind,
    message: String,
}

impl ConfigError {
    pub(crate) fn new(kind: ConfigErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// The category of the problem.
    pub fn kind(&self) -> ConfigErrorKind {
        self.kind
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid router configuration: {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(crate) fn check_weight(name: &str, weight: f64) -> Result<(), ConfigError> {
    if !weight.is_finite() || weight < 0.0 {
        return Err(ConfigError::new(
            ConfigErrorKind::InvalidWeight,
            format!("weight of backend `{name}` is {weight}; weights must be finite and >= 0"),
        ));
    }
    Ok(())
}
