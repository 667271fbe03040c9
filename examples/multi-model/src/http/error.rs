//! Errors as `{"error": "..."}` with the status that says what went wrong.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use convoy_batcher::{Closed, DeadlineExceeded, QueueFull};
use convoy_gpu_pool::QuotaExceeded;
use convoy_router::NoReadyReplica;
use tower::BoxError;

/// An error answer: a status and a message for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// What went wrong, for the client.
    pub message: String,
}

impl ApiError {
    /// An error with `status`.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }

    /// 400: the request is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// 422: well formed, but not something the model takes.
    pub fn unprocessable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, message)
    }

    /// 404: no such model, version or route.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, message)
    }

    /// 503: overloaded, or not ready.
    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, message)
    }

    /// 504: not answered within its deadline.
    pub fn deadline(message: impl Into<String>) -> Self {
        Self::new(StatusCode::GATEWAY_TIMEOUT, message)
    }

    /// 500: the server failed.
    pub fn internal(message: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, message)
    }

    /// Maps the crates' typed errors: a full queue or no ready replica is
    /// 503, an expired deadline 504, anything else 500.
    pub fn from_service(e: BoxError) -> Self {
        let status = if caused_by::<QueueFull>(&e)
            || caused_by::<NoReadyReplica>(&e)
            || caused_by::<Closed>(&e)
            || caused_by::<QuotaExceeded>(&e)
        {
            StatusCode::SERVICE_UNAVAILABLE
        } else if caused_by::<DeadlineExceeded>(&e) {
            StatusCode::GATEWAY_TIMEOUT
        } else {
            StatusCode::INTERNAL_SERVER_ERROR
        };
        Self::new(status, e.to_string())
    }
}

fn caused_by<E: std::error::Error + 'static>(e: &BoxError) -> bool {
    std::iter::successors(Some(&**e as &(dyn std::error::Error + 'static)), |e| {
        e.source()
    })
    .any(|e| e.is::<E>())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Json(example_kserve::ErrorBody {
            error: self.message,
        });
        (self.status, body).into_response()
    }
}

impl From<axum::extract::rejection::BytesRejection> for ApiError {
    fn from(r: axum::extract::rejection::BytesRejection) -> Self {
        let status = r.status();
        let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
            "request body is larger than the server's body_limit".to_string()
        } else {
            r.body_text()
        };
        Self::new(status, message)
    }
}
