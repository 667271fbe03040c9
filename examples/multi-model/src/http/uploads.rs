//! The parts of a v1 `classify`, `detect` or `embed` request, as FastAPI
//! clients send them: `multipart/form-data` (each part one image or one
//! text, under any field name), a JSON body of base64 images
//! (`{"images": ["<base64>", ...]}`), or one raw image body. The limits of
//! `[server.uploads]` are applied while the body is read and before any
//! part is decoded: too many parts fails the request, a part over the byte
//! limit fails only that part.

use axum::body::Bytes;
use axum::extract::multipart::{Field, MultipartError};
use axum::extract::{FromRequest, Multipart, Request};
use axum::http::{header, StatusCode};
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use bytes::BytesMut;
use serde::Deserialize;
use utoipa::ToSchema;

use super::ApiError;
use crate::config::UploadLimits;

/// The field name that asks for a list answer even for one part (FastAPI's
/// `files: list[UploadFile]`).
const LIST_FIELD: &str = "files";

/// The parts of one request, in the order they came.
#[derive(Debug)]
pub(crate) struct Upload {
    /// Each part's bytes, or why that part alone is refused.
    pub(crate) parts: Vec<Result<Bytes, ApiError>>,
    /// Whether the client asked for one answer per part (several parts, a
    /// `files` field, or a JSON list) rather than one answer.
    pub(crate) list: bool,
}

impl Upload {
    /// A raw body: one part, one answer.
    pub(crate) fn single(body: Bytes) -> Self {
        Self {
            parts: vec![Ok(body)],
            list: false,
        }
    }
}

/// Whether `request` is `multipart/form-data`.
pub(crate) fn is_multipart(request: &Request) -> bool {
    request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("multipart/form-data")
        })
}

/// Whether a non-multipart body is JSON (`{...}`) rather than a raw image:
/// JPEG and PNG never start with `{`, whatever `content-type` the client
/// sent (many send raw images as `application/json` or with none).
pub(crate) fn is_json_object(body: &[u8]) -> bool {
    body.iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|&b| b == b'{')
}

/// Reads a `multipart/form-data` body part by part: each part is kept up
/// to `max_part_bytes` (the rest of a larger part is read and dropped, and
/// the part answered 413 alone); more than `max_parts` parts fails the
/// request. Empty parts without a file name (an empty form field, as
/// Swagger UI and browsers send for an unused input) are skipped.
pub(crate) async fn multipart(request: Request, limits: &UploadLimits) -> Result<Upload, ApiError> {
    let mut form = Multipart::from_request(request, &())
        .await
        .map_err(|r| ApiError::new(r.status(), r.body_text()))?;
    let mut parts = Vec::new();
    let mut list = false;
    while let Some(field) = form.next_field().await.map_err(multipart_error)? {
        let list_field = field.name() == Some(LIST_FIELD);
        let unnamed_file = field.file_name().is_none_or(str::is_empty);
        let part = read_part(field, limits.max_part_bytes).await?;
        if unnamed_file && part.as_ref().is_ok_and(Bytes::is_empty) {
            continue;
        }
        list |= list_field;
        if parts.len() == limits.max_parts {
            return Err(too_many_parts(limits.max_parts));
        }
        parts.push(part);
    }
    if parts.is_empty() {
        return Err(ApiError::bad_request(
            "the multipart/form-data body has no non-empty part: send each image or text \
             as a part, e.g. `curl -F file=@image.jpg`",
        ));
    }
    list |= parts.len() > 1;
    Ok(Upload { parts, list })
}

/// One part's bytes, at most `max` of them kept.
async fn read_part(mut field: Field<'_>, max: u64) -> Result<Result<Bytes, ApiError>, ApiError> {
    let mut data = BytesMut::new();
    let mut size: u64 = 0;
    while let Some(chunk) = field.chunk().await.map_err(multipart_error)? {
        size = size.saturating_add(chunk.len() as u64);
        if size <= max {
            data.extend_from_slice(&chunk);
        } else if !data.is_empty() {
            data = BytesMut::new();
        }
    }
    if size > max {
        return Ok(Err(part_too_large(format!("part of {size} bytes"), max)));
    }
    Ok(Ok(data.freeze()))
}

fn multipart_error(e: MultipartError) -> ApiError {
    let status = e.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is larger than the server's body_limit".to_string()
    } else {
        format!("malformed multipart/form-data body: {}", e.body_text())
    };
    ApiError::new(status, message)
}

fn too_many_parts(max: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("more than {max} parts: the limit is {max} per request (server.uploads.max_parts)"),
    )
}

fn part_too_large(what: String, max: u64) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        format!("{what} is over the limit of {max} bytes per part (server.uploads.max_part_bytes)"),
    )
}

/// A JSON body of images: `{"images": ["<base64>", ...]}`; each may also be
/// a `data:` URL (`data:image/jpeg;base64,...`).
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct Images {
    /// The images, base64 (standard alphabet, padding optional), each
    /// answered on its own, in order.
    images: Vec<String>,
}

/// Base64 as browsers and Python write it, with or without padding.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Parses a JSON images body: the count is checked before any image is
/// decoded, and each image's decoded size (known from its length) before
/// it is decoded. The answer is always a list, as the request's is.
pub(crate) fn json_images(body: &[u8], limits: &UploadLimits) -> Result<Upload, ApiError> {
    let Images { images } = serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "expected {{\"images\": [\"<base64>\", ...]}} (or a raw JPEG or PNG body): {e}"
        ))
    })?;
    if images.is_empty() {
        return Err(ApiError::unprocessable("images: at least one image"));
    }
    if images.len() > limits.max_parts {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} images: the limit is {} per request (server.uploads.max_parts)",
                images.len(),
                limits.max_parts
            ),
        ));
    }
    let parts = images
        .iter()
        .map(|image| base64_image(image, limits.max_part_bytes))
        .collect();
    Ok(Upload { parts, list: true })
}

/// One base64 image, decoded unless its decoded size would be over `max`.
fn base64_image(image: &str, max: u64) -> Result<Bytes, ApiError> {
    let encoded = match image.strip_prefix("data:") {
        Some(url) => url
            .split_once(";base64,")
            .map(|(_, data)| data)
            .ok_or_else(|| ApiError::bad_request("a data: URL image must be base64 (;base64,)"))?,
        None => image,
    };
    let decoded = base64::decoded_len_estimate(encoded.len()) as u64;
    // The estimate rounds up to whole 3-byte groups: allow for that slack.
    if decoded.saturating_sub(2) > max {
        return Err(part_too_large(
            format!("an image of about {decoded} bytes"),
            max,
        ));
    }
    let bytes = BASE64
        .decode(encoded)
        .map_err(|e| ApiError::bad_request(format!("the image is not valid base64: {e}")))?;
    if bytes.len() as u64 > max {
        return Err(part_too_large(
            format!("an image of {} bytes", bytes.len()),
            max,
        ));
    }
    Ok(Bytes::from(bytes))
}

/// The multipart form as documented, for Swagger UI's file pickers: any
/// field name is accepted, each part one image (`classify`, `detect`) or
/// one text (`embed`: a text file, or a plain form field).
#[derive(ToSchema)]
#[allow(dead_code)] // only documents the form: the parts are read by `multipart`
pub(crate) struct UploadForm {
    /// One image or text, answered with one answer (as a raw body is).
    #[schema(value_type = String, format = Binary, required = false)]
    file: Vec<u8>,
    /// Several images or texts, answered with a list: one entry per part,
    /// in order (a list even for one).
    // The empty example keeps Swagger UI from filling in a sample part.
    #[schema(value_type = Vec<String>, format = Binary, required = false, example = json!([]))]
    files: Vec<Vec<u8>>,
}

#[cfg(test)]
mod tests;
