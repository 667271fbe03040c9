//! The errors of convoy-kube: one type, classified by what a caller does
//! about them.

use std::fmt;

/// What went wrong talking to the API server or deciding to write.
///
/// Match on [`Error::kind`]; the enum is `#[non_exhaustive]` so new kinds do
/// not break callers.
#[derive(Debug)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

/// The class of an [`Error`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The API server could not be reached or answered 5xx / 429: the last
    /// snapshot is kept and nothing was written.
    Unreachable,
    /// The data a scale-down would rest on is older than allowed (the last
    /// successful read, or the per-pod load): the scale-down was refused.
    Stale,
    /// This process does not hold the leader Lease: nothing was written.
    NotLeader,
    /// An optimistic-concurrency write lost (HTTP 409 on a `resourceVersion`
    /// precondition, or a create that found the object already there).
    Conflict,
    /// A watch's `resourceVersion` is too old (HTTP 410 Gone): re-list.
    Gone,
    /// The object is not there (HTTP 404).
    NotFound,
    /// Any other answer of the API server (4xx), or a response that could
    /// not be decoded.
    Api,
    /// Invalid configuration, naming the field.
    Config,
}

impl Error {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    pub(crate) fn config(field: &str, why: impl fmt::Display) -> Self {
        Self::new(ErrorKind::Config, format!("invalid `{field}`: {why}"))
    }

    /// The class of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// Classifies an error of the kube client: transport failures and 5xx /
    /// 429 answers are [`ErrorKind::Unreachable`].
    pub(crate) fn from_kube(context: &str, error: kube::Error) -> Self {
        let kind = match &error {
            kube::Error::Api(status) => match status.code {
                404 => ErrorKind::NotFound,
                409 => ErrorKind::Conflict,
                410 => ErrorKind::Gone,
                429 | 500..=599 => ErrorKind::Unreachable,
                _ => ErrorKind::Api,
            },
            kube::Error::SerdeError(_) => ErrorKind::Api,
            _ => ErrorKind::Unreachable,
        };
        Self::new(kind, format!("{context}: {error}"))
    }
}

impl ErrorKind {
    /// A short lowercase name, as in metrics labels (`unreachable`, `stale`,
    /// `not_leader`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Unreachable => "unreachable",
            ErrorKind::Stale => "stale",
            ErrorKind::NotLeader => "not_leader",
            ErrorKind::Conflict => "conflict",
            ErrorKind::Gone => "gone",
            ErrorKind::NotFound => "not_found",
            ErrorKind::Api => "api",
            ErrorKind::Config => "config",
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}",
            self.kind.as_str().replace('_', " "),
            self.message
        )
    }
}

impl std::error::Error for Error {}

/// Checks a Kubernetes object name (RFC 1123 subdomain: lowercase
/// alphanumerics, `-` and `.`, at most 253 characters, alphanumeric at both
/// ends).
pub(crate) fn check_name(field: &str, name: &str) -> Result<(), Error> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.';
    let ok_end = |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    if name.is_empty() || name.len() > 253 {
        return Err(Error::config(
            field,
            format!("{name:?} must be 1 to 253 characters"),
        ));
    }
    if !name.chars().all(ok_char) || !ok_end(name.chars().next()) || !ok_end(name.chars().last()) {
        return Err(Error::config(
            field,
            format!(
                "{name:?} is not a Kubernetes object name (lowercase alphanumerics, '-' and '.')"
            ),
        ));
    }
    Ok(())
}
