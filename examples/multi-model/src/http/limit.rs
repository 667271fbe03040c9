//! The early body-size check: a request whose `content-length` is over
//! `server.body_limit` is answered 413 before any of its body is read, so a
//! client that declares 50 MB and stalls gets its answer at once instead of
//! the server waiting for bytes it would refuse anyway. Bodies without a
//! `content-length` (chunked) are counted as they stream, by the routes'
//! own limits.

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::ApiError;

/// The most bytes a request body may declare.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub(crate) u64);

/// Refuses a declared body over the limit with a JSON 413 and closes the
/// connection (the unread body cannot be skipped); lets everything else
/// through.
pub(crate) async fn refuse_declared_oversize(
    State(limit): State<BodyLimit>,
    req: Request<Body>,
    next: Next,
) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    match declared {
        Some(n) if n > limit.0 => {
            let mut rsp = ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!(
                    "request body of {n} bytes is larger than the server's body_limit ({} bytes)",
                    limit.0
                ),
            )
            .into_response();
            rsp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
            rsp
        }
        _ => next.run(req).await,
    }
}
