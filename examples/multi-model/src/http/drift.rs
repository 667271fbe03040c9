//! `/v1/models/{name}/drift` and `/v1/models/{name}/drift.html`: the last
//! closed window's drift report of a deployment with `[deployment.drift]`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::Json;

use super::docs::V1;
use super::{ApiError, AppState};

/// Why a deployment has no report to show.
enum Missing {
    /// No such deployment, or no monitor: 404.
    NotFound(String),
    /// No window closed yet: 503 with `Retry-After` (seconds).
    NotYet(String, u64),
}

impl IntoResponse for Missing {
    fn into_response(self) -> Response {
        match self {
            Missing::NotFound(m) => ApiError::not_found(m).into_response(),
            Missing::NotYet(m, secs) => {
                let mut r = ApiError::unavailable(m).into_response();
                r.headers_mut().insert(
                    header::RETRY_AFTER,
                    secs.to_string().parse().expect("digits"),
                );
                r
            }
        }
    }
}

/// The report of deployment `name`, or why there is none.
fn report(state: &AppState, name: &str) -> Result<Arc<convoy_drift::DriftReport>, Missing> {
    let d = state
        .server
        .deployment(name)
        .ok_or_else(|| Missing::NotFound(format!("no deployment {name:?}")))?;
    let section = d.config.drift.as_ref();
    let monitor = section.and_then(|s| s.monitor()).ok_or_else(|| {
        Missing::NotFound(format!(
            "deployment {name:?} has no drift monitor ([deployment.drift] in its configuration)"
        ))
    })?;
    monitor.handle.latest().ok_or_else(|| {
        let window = section.map_or(60, |s| s.config.window.as_secs().max(1));
        Missing::NotYet(
            format!(
                "deployment {name:?}: no drift window has closed yet (one closes every {window} s)"
            ),
            window,
        )
    })
}

/// The last closed window's drift report (Evidently's tests per column, the
/// dataset verdict).
#[utoipa::path(get, path = "/v1/models/{name}/drift", tag = V1,
    params(("name" = String, Path, description = "The deployment", example = "resnet50")),
    responses(
        (status = 200, description = "The drift report: window, per-column test, score, threshold, verdict; the dataset verdict",
            content_type = "application/json"),
        (status = 404, description = "No such deployment, or it has no [deployment.drift]"),
        (status = 503, description = "No window has closed yet (Retry-After)")))]
pub(crate) async fn drift_json(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match report(&state, &name) {
        Ok(r) => Json(&*r).into_response(),
        Err(e) => e.into_response(),
    }
}

/// The last closed window's drift report as a readable HTML page.
#[utoipa::path(get, path = "/v1/models/{name}/drift.html", tag = V1,
    params(("name" = String, Path, description = "The deployment", example = "resnet50")),
    responses(
        (status = 200, description = "The drift report as HTML", content_type = "text/html"),
        (status = 404, description = "No such deployment, or it has no [deployment.drift]"),
        (status = 503, description = "No window has closed yet (Retry-After)")))]
pub(crate) async fn drift_html(
    State(state): State<Arc<AppState>>,
    Path(name): Path<String>,
) -> Response {
    match report(&state, &name) {
        Ok(r) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            r.to_html(),
        )
            .into_response(),
        Err(e) => e.into_response(),
    }
}
