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
}

/// An error from loading or running a model.
#[derive(Debug)]
pub struct ModelError {
    kind: ModelErrorKind,
    message: String,
    input: Option<InputError>,
}

impl ModelError {
    pub(crate) fn new(kind: ModelErrorKind, message: impl Into<String>) -> Self {
        ModelError {
            kind,
            message: message.into(),
            input: None,
        }
    }

    pub(crate) fn manifest(path: &Path, message: impl fmt::Display) -> Self {
        ModelError::new(
            ModelErrorKind::Manifest,
            format!("manifest {}: {message}", path.display()),
        )
    }

    pub(crate) fn load(path: &Path, message: impl fmt::Display) -> Self {
        ModelError::new(
            ModelErrorKind::Load,
            format!("{}: {message}", PathBuf::from(path).display()),
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
        self.input
            .as_ref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}
