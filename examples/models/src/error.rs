//! Typed errors: [`InputError`] for bad requests (a server answers 4xx with
//! its message), [`ModelError`] for everything a model can fail at.

use std::fmt;
use std::path::{Path, PathBuf};

/// What was wrong with an input.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum InputErrorKind {
    /// The bytes are not an image in a supported format (JPEG, PNG), or are
    /// truncated or corrupt.
    Image,
    /// The image's dimensions (read from its header) exceed the limits.
    ImageTooLarge,
    /// The text could not be tokenized.
    Text,
    /// An input tensor is missing, has the wrong datatype or shape, or the
    /// items of a batch disagree.
    Tensor,
    /// A model output could not be post-processed (wrong shape for its kind).
    Output,
}

/// A bad input: the caller's fault, reported with a message saying what was
/// wrong. Never a panic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputError {
    kind: InputErrorKind,
    message: String,
}

impl InputError {
    pub(crate) fn new(kind: InputErrorKind, message: impl Into<String>) -> Self {
        InputError {
            kind,
            message: message.into(),
        }
    }

    /// What was wrong.
    pub fn kind(&self) -> InputErrorKind {
        self.kind
    }

    /// The message, as a server would send it back.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for InputError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for InputError {}

/// What went wrong with a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ModelErrorKind {
    /// The manifest is missing, unreadable or invalid.
    Manifest,
    /// A file the model needs (TorchScript, labels, tokenizer) could not be
    /// read or loaded.
    Load,
    /// The load options are invalid (zero threads, zero batch size, a CUDA
    /// device that is not there).
    Options,
    /// A request's input was bad: see [`ModelError::input_error`].
    Input,
    /// libtorch reported an error during the forward pass.
    Forward,
    /// The model's thread is gone (the model failed or was dropped).
    Closed,
    /// libtorch's allocation for the forward pass did not fit in the
    /// model's tenant quota: see [`ModelError::quota_exceeded`].
    Quota,
}

/// An error from loading or running a model.
#[derive(Debug)]
pub struct ModelError {
    kind: ModelErrorKind,
    message: String,
    input: Option<InputError>,
    #[cfg(feature = "torch")]
    quota: Option<convoy_gpu_pool::QuotaExceeded>,
}

impl ModelError {
    pub(crate) fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        ModelError {
            kind,
            message: message.into(),
            input: None,
            #[cfg(feature = "torch")]
            quota: None,
        }
    }

    /// A forward pass that failed because its tenant's quota refused one of
    /// libtorch's allocations.
    #[cfg(feature = "torch")]
    pub(crate) fn quota(q: convoy_gpu_pool::QuotaExceeded) -> Self {
        ModelError {
            quota: Some(q.clone()),
            ..ModelError::new(ModelErrorKind::Quota, format!("forward pass failed: {q}"))
        }
    }

    /// The quota refusal that failed the forward pass (its source, too).
    #[cfg(feature = "torch")]
    pub fn quota_exceeded(&self) -> Option<&convoy_gpu_pool::QuotaExceeded> {
        self.quota.as_ref()
    }

    pub(crate) fn manifest(path: &Path, message: impl fmt::Display) -> Self {
        ModelError::new(
            ModelErrorKind::Manifest,
            format!("manifest {}: {message}", path.display()),
        )
    }

    pub(crate) fn load(path: &Path, message: impl fmt::Display) -> Self {
        let message = message.to_string();
        ModelError::new(
            ModelErrorKind::Load,
            format!(
                "{}: {}",
                PathBuf::from(path).display(),
                without_backtrace(&message)
            ),
        )
    }

    #[cfg(feature = "torch")]
    pub(crate) fn forward(message: impl fmt::Display) -> Self {
        ModelError::new(
            ModelErrorKind::Forward,
            format!("forward pass failed: {message}"),
        )
    }

    /// What went wrong.
    pub fn kind(&self) -> ModelErrorKind {
        self.kind
    }

    /// The input error, when the caller's input was at fault (a 4xx, not a
    /// 5xx).
    pub fn input_error(&self) -> Option<&InputError> {
        self.input.as_ref()
    }
}

impl From<InputError> for ModelError {
    fn from(e: InputError) -> Self {
        ModelError {
            kind: ModelErrorKind::Input,
            message: e.message.clone(),
            input: Some(e),
            #[cfg(feature = "torch")]
            quota: None,
        }
    }
}

impl fmt::Display for ModelError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ModelError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        #[cfg(feature = "torch")]
        if let Some(q) = &self.quota {
            return Some(q);
        }
        self.input
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// libtorch's message without the C++ backtrace it appends (`Exception
/// raised from …` and its frames): the what, not the where.
fn without_backtrace(message: &str) -> &str {
    message
        .find("\nException raised from ")
        .map_or(message, |at| &message[..at])
}

#[cfg(test)]
mod backtrace_tests {
    use super::*;

    #[test]
    fn a_load_error_keeps_the_message_and_drops_libtorchs_frames() {
        let raw = "Internal torch error: tenant \"m/1\" memory quota exceeded: requested 4 bytes\n\
                   Exception raised from allocate at csrc/convoy_hooks.cpp:136 (most recent call first):\n\
                   frame #0: c10::Error::Error() + 0x9d";
        let e = ModelError::load(Path::new("/m/1/model.pt"), raw);
        assert_eq!(
            e.to_string(),
            "/m/1/model.pt: Internal torch error: tenant \"m/1\" memory quota exceeded: requested 4 bytes"
        );
        assert_eq!(without_backtrace("plain"), "plain");
    }
}
