//! What can go wrong between the server and its model registry.

use std::fmt;

/// What kind of failure a [`RegistryError`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistryErrorKind {
    /// The source string is not a valid path or `models:/` URI.
    InvalidUri,
    /// The registered model, version, stage or alias does not exist.
    NotFound,
    /// The registry could not be reached or answered with a server error.
    Unreachable,
    /// The registry answered something this client does not understand.
    Protocol,
    /// The artifacts could not be stored in the local cache.
    Cache,
    /// The downloaded model failed verification (missing manifest, a
    /// TorchScript file that does not load, a failing warm-up).
    Verification,
    /// The artifacts exceed the configured limits.
    TooLarge,
}

/// An error resolving, downloading or verifying a model.
#[derive(Debug)]
pub struct RegistryError {
    kind: RegistryErrorKind,
    message: String,
}

impl RegistryError {
    pub(crate) fn new(kind: RegistryErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn invalid_uri(uri: &str, why: &str) -> Self {
        Self::new(
            RegistryErrorKind::InvalidUri,
            format!("invalid model source {uri:?}: {why}"),
        )
    }

    /// A failed verification, for verifiers outside this crate.
    pub fn verification(message: impl Into<String>) -> Self {
        Self::new(RegistryErrorKind::Verification, message)
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> RegistryErrorKind {
        self.kind
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RegistryError {}
