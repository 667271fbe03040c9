//! The server's one classification of errors: every error a deployment
//! returns gets a kind here, and each protocol answers that kind with one
//! status (v1 and v2 REST: [`ErrorKind::http_status`]; gRPC:
//! [`ErrorKind::grpc_code`]). The table is in `examples/README.md`.
//!
//! An internal error answers a short line with the request id; the error
//! itself (a libtorch message, a traceback) goes to the log under that id.

use std::error::Error as StdError;

use convoy_batcher::{Closed, DeadlineExceeded, QueueFull};
use convoy_gpu_pool::QuotaExceeded;
use convoy_router::NoReadyReplica;
pub use example_kserve::ErrorKind;
use example_models::ContractError;
use tower::BoxError;

use crate::deploy::{NoSuchVersion, TimedOut};

/// The kind of one error (not its sources): `None` when the server does
/// not know it, so the caller looks further down the source chain.
pub fn kind_of(e: &(dyn StdError + 'static)) -> Option<ErrorKind> {
    if let Some(own) = e.downcast_ref::<example_kserve::Error>() {
        Some(own.kind())
    } else if e.is::<ContractError>() || e.is::<NoSuchVersion>() {
        Some(ErrorKind::BadRequest)
    } else if e.is::<QueueFull>() {
        Some(ErrorKind::Overloaded)
    } else if e.is::<QuotaExceeded>() {
        Some(ErrorKind::Quota)
    } else if e.is::<DeadlineExceeded>()
        || e.is::<TimedOut>()
        || e.is::<tokio::time::error::Elapsed>()
    {
        Some(ErrorKind::DeadlineExceeded)
    } else if e.is::<Closed>() || e.is::<NoReadyReplica>() {
        Some(ErrorKind::Unavailable)
    } else {
        None
    }
}

/// The kind of `e`: the first error in its source chain that
/// [`kind_of`] knows decides; anything else is [`ErrorKind::Internal`].
pub fn classify(e: &BoxError) -> ErrorKind {
    let mut current: Option<&(dyn StdError + 'static)> = Some(&**e);
    while let Some(e) = current {
        if let Some(kind) = kind_of(e) {
            return kind;
        }
        current = e.source();
    }
    ErrorKind::Internal
}

/// The message a client gets for `e`: its own for a known kind; for an
/// internal error a short line with `request_id`, the details logged.
pub fn public_message(e: &BoxError, request_id: &str) -> String {
    match classify(e) {
        ErrorKind::Internal => internal_message(e, request_id),
        _ => e.to_string(),
    }
}

/// Logs an internal error under `request_id` and returns the line the
/// client gets.
pub fn internal_message(e: &BoxError, request_id: &str) -> String {
    tracing::error!(request_id, error = %e, "internal error");
    format!("internal error (request id {request_id}; details in the server log)")
}

/// A fresh request id, for a request that came without one.
pub fn new_request_id() -> String {
    format!("{:016x}", rand::random::<u64>())
}

/// `e` as a KServe v2 error (REST and gRPC).
pub fn to_v2(e: &BoxError, request_id: &str) -> example_kserve::Error {
    example_kserve::Error::from_service(e, kind_of, |e| internal_message(e, request_id))
}
