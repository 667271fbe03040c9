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
    /// Anything else: HTTP 500, gRPC `INTERNAL`.
    Internal,
}

impl ErrorKind {
    /// The HTTP status of this kind.
    pub fn http_status(self) -> StatusCode {
        match self {
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ErrorKind::Overloaded | ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The gRPC status code of this kind.
    pub fn grpc_code(self) -> tonic::Code {
        match self {
            ErrorKind::BadRequest => tonic::Code::InvalidArgument,
            ErrorKind::NotFound => tonic::Code::NotFound,
            ErrorKind::PayloadTooLarge | ErrorKind::Overloaded => tonic::Code::ResourceExhausted,
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

    /// Maps an error from a convoy service stack: the first error in its
    /// source chain that convoy knows decides the kind.
    ///
    /// | error | kind |
    /// |---|---|
    /// | an [`Error`] | its own |
    /// | `convoy_batcher::QueueFull` | [`ErrorKind::Overloaded`] |
    /// | `convoy_batcher::DeadlineExceeded` | [`ErrorKind::DeadlineExceeded`] |
    /// | `convoy_batcher::Closed`, `convoy_router::NoReadyReplica` | [`ErrorKind::Unavailable`] |
    /// | anything else | [`ErrorKind::Internal`] |
    pub fn from_service(error: BoxError) -> Self {
        let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error.as_ref());
        while let Some(e) = current {
            if let Some(own) = e.downcast_ref::<Error>() {
                return own.clone();
            }
            let kind = if e.is::<convoy_batcher::QueueFull>() {
                Some(ErrorKind::Overloaded)
            } else if e.is::<convoy_batcher::DeadlineExceeded>() {
                Some(ErrorKind::DeadlineExceeded)
            } else if e.is::<convoy_batcher::Closed>() || e.is::<convoy_router::NoReadyReplica>() {
                Some(ErrorKind::Unavailable)
            } else {
                None
            };
            if let Some(kind) = kind {
                return Self::new(kind, e.to_string());
            }
            current = e.source();
        }
        Self::internal(error.to_string())
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
