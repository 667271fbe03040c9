//! The protocol's errors: a kind that picks the HTTP status and gRPC code,
//! and a message for the caller.

use std::fmt;

use http::StatusCode;
use tower::BoxError;

/// What went wrong, as far as the caller's status code is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The request is malformed or does not fit the model: HTTP 400,
    /// gRPC `INVALID_ARGUMENT`.
    BadRequest,
    /// Unknown model or version: HTTP 404, gRPC `NOT_FOUND`.
    NotFound,
    /// The body or a tensor is over a configured limit: HTTP 413, gRPC
    /// `RESOURCE_EXHAUSTED`.
    PayloadTooLarge,
    /// The model's queue is full (load shedding): HTTP 503, gRPC
    /// `RESOURCE_EXHAUSTED`, so clients back off.
    Overloaded,
    /// The model or server is not ready or closed: HTTP 503, gRPC
    /// `UNAVAILABLE`.
    Unavailable,
    /// The request's deadline passed before an answer: HTTP 504, gRPC
    /// `DEADLINE_EXCEEDED`.
    DeadlineExceeded,
    /// A resource quota of the server is used up (a model version's share
    /// of device memory): HTTP 503, gRPC `RESOURCE_EXHAUSTED`, so clients
    /// back off.
    Quota,
    /// Anything else: HTTP 500, gRPC `INTERNAL`.
    Internal,
}

impl ErrorKind {
    /// Every kind, in the order of the table in `examples/README.md`.
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::BadRequest,
        ErrorKind::NotFound,
        ErrorKind::PayloadTooLarge,
        ErrorKind::Overloaded,
        ErrorKind::Quota,
        ErrorKind::Unavailable,
        ErrorKind::DeadlineExceeded,
        ErrorKind::Internal,
    ];

    /// The HTTP status of this kind.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Overloaded | ErrorKind::Unavailable | ErrorKind::Quota => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code of this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::PayloadTooLarge | ErrorKind::Overloaded | ErrorKind::Quota => {
                tonic::Code::ResourceExhausted
            }
            ErrorKind::Unavailable => tonic::Code::Unavailable,
            ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
            ErrorKind::Internal => tonic::Code::Internal,
        }
    }
}

/// A protocol error: a [`ErrorKind`] and a message for the caller
/// (REST answers `{"error": message}`, gRPC a status with the message).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    /// An error of `kind` with `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
        }
    }

    /// A malformed request (400).
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::BadRequest, message)
    }

    /// An unknown model or version (404).
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::NotFound, message)
    }

    /// A body or tensor over a limit (413).
    pub fn payload_too_large(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::PayloadTooLarge, message)
    }

    /// A full queue (503, gRPC `RESOURCE_EXHAUSTED`).
    pub fn overloaded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Overloaded, message)
    }

    /// A model or server that cannot serve now (503).
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Unavailable, message)
    }

    /// A deadline that passed (504).
    pub fn deadline_exceeded(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::DeadlineExceeded, message)
    }

    /// A failure inside the server (500).
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(ErrorKind::Internal, message)
    }

    /// Maps a service's error with `classify`, the server's one
    /// classification (this crate knows no service stack): the first error
    /// in the source chain that is an [`Error`] or that `classify` knows
    /// decides the kind; anything else is [`ErrorKind::Internal`].
    ///
    /// The message of an internal error is `internal`'s: a server answers
    /// a short line with the request id and logs the details, never a
    /// library's error text.
    pub fn from_service(
        error: &BoxError,
        classify: impl Fn(&(dyn std::error::Error + 'static)) -> Option<ErrorKind>,
        internal: impl FnOnce(&BoxError) -> String,
    ) -> Self {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = current {
            if let Some(own) = e.downcast_ref::<Error>() {
                return own.clone();
            }
            if let Some(kind) = classify(e).filter(|k| *k != ErrorKind::Internal) {
                return Self::new(kind, e.to_string());
            }
            current = e.source();
        }
        Self::internal(internal(error))
    }

    /// What kind of error this is.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message for the caller.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The HTTP status.
    pub fn http_status(&self) -> StatusCode {
        self.kind.http_status()
    }

    /// The gRPC status code.
    pub fn grpc_code(&self) -> tonic::Code {
        self.kind.grpc_code()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<Error> for tonic::Status {
    fn from(error: Error) -> Self {
        tonic::Status::new(error.grpc_code(), error.message)
    }
}
