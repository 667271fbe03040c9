//! `classify`, `embed` and `detect` of one image or a list of texts:
//! decoding, tokenizing and the post-processing run on the blocking
//! threads (bounded), the forward pass through the deployment. A request of
//! several parts calls these once per part (see `v1`). Preprocessing
//! follows the first version's manifest: the versions of a deployment share
//! their input format.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use example_models::image::{self as img, ImageLimits};
use example_models::{post, InputError, InputErrorKind, Postprocess};
use example_tensor::{NamedTensor, TensorData};
use futures::future::try_join_all;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::v1::run;
use super::{ApiError, AppState};
use crate::deploy::Deployment;
use crate::model::TorchModel;

/// `classify` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ClassifyResponse {
    /// The deployment.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// The most probable classes, best first.
    pub classes: Vec<ClassScore>,
}

/// One class of a [`ClassifyResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ClassScore {
    /// The class index.
    pub index: usize,
    /// Its label.
    pub label: String,
    /// Its softmax probability, in (0, 1].
    pub score: f32,
}

impl From<post::Class> for ClassScore {
    fn from(c: post::Class) -> Self {
        Self {
            index: c.index,
            label: c.label,
            score: c.score,
        }
    }
}

/// `embed` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EmbedResponse {
    /// The deployment.
    pub model: String,
    /// One L2-normalised vector per text, in order.
    pub embeddings: Vec<Vec<f32>>,
}

/// `detect` answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DetectResponse {
    /// The deployment.
    pub model: String,
    /// The version that answered.
    pub version: String,
    /// The image's width and height.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// The objects found, best first.
    pub detections: Vec<Detected>,
}

/// One object of a [`DetectResponse`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Detected {
    /// `[x1, y1, x2, y2]` in the image's pixels.
    pub bbox: [f32; 4],
    /// The class index.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// The class score.
    pub score: f32,
}

impl From<post::Detection> for Detected {
    fn from(d: post::Detection) -> Self {
        Self {
            bbox: d.bbox,
            class: d.class,
            label: d.label,
            score: d.score,
        }
    }
}

fn input(e: InputError) -> ApiError {
    if e.kind() == InputErrorKind::ImageTooLarge {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("{e} (server.uploads.max_pixels)"),
        )
    } else {
        ApiError::unprocessable(e.to_string())
    }
}

/// The image limits of `state`'s configuration.
fn image_limits(state: &AppState) -> ImageLimits {
    ImageLimits {
        max_pixels: state.server.config.server.uploads.max_pixels,
        ..ImageLimits::default()
    }
}

fn torch(d: &Deployment) -> Result<TorchModel, ApiError> {
    d.versions()[0]
        .model
        .torch()
        .cloned()
        .ok_or_else(|| ApiError::internal("not a TorchScript model"))
}

fn first_output(outputs: Vec<NamedTensor>) -> Result<NamedTensor, ApiError> {
    outputs
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::internal("the model returned no output"))
}

/// Classifies one image (JPEG or PNG).
pub(crate) async fn classify(
    state: &AppState,
    d: &Deployment,
    image: Bytes,
    headers: &HeaderMap,
) -> Result<ClassifyResponse, ApiError> {
    let model = torch(d)?;
    let m = model.clone();
    let limits = image_limits(state);
    let tensor = state
        .blocking(move || {
            let image = img::decode(&image, &limits).map_err(input)?;
            Ok(img::classify_input(&image, m.manifest()))
        })
        .await?;
    let answer = run(state, d, vec![tensor], headers).await?;
    let logits = first_output(answer.outputs)?;
    let classes = state
        .blocking(move || {
            let k = match model.manifest().postprocess {
                Postprocess::TopK { k } => k,
                _ => 5,
            };
            let TensorData::Fp32(v) = &logits.tensor.data else {
                return Err(ApiError::internal("logits must be FP32"));
            };
            Ok(post::top_k(v, k, &model.manifest().label_names))
        })
        .await?;
    Ok(ClassifyResponse {
        model: d.config.name.clone(),
        version: answer.version.to_string(),
        classes: classes.into_iter().map(ClassScore::from).collect(),
    })
}

/// `embed` body: `{"texts": [...]}` or a list of strings.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum Texts {
    Object { texts: Vec<String> },
    List(Vec<String>),
}

/// Texts per `embed` request at most.
pub const MAX_TEXTS: usize = 256;

/// The texts of a JSON `embed` body, 1 to [`MAX_TEXTS`] of them.
pub(crate) fn json_texts(body: &[u8]) -> Result<Vec<String>, ApiError> {
    let texts = match serde_json::from_slice::<Texts>(body) {
        Ok(Texts::Object { texts } | Texts::List(texts)) => texts,
        Err(e) => {
            return Err(ApiError::bad_request(format!(
                "expected {{\"texts\": [\"...\"]}} or a JSON list of strings: {e}"
            )))
        }
    };
    if texts.is_empty() || texts.len() > MAX_TEXTS {
        return Err(ApiError::unprocessable(format!(
            "texts: 1 to {MAX_TEXTS} strings, got {}",
            texts.len()
        )));
    }
    Ok(texts)
}

/// The text of a multipart part: UTF-8.
pub(crate) fn text_part(part: Bytes) -> Result<String, ApiError> {
    String::from_utf8(part.into())
        .map_err(|e| ApiError::bad_request(format!("a text part must be UTF-8: {e}")))
}

/// Embeds `texts`, each its own item for the batcher; fails as a whole if
/// one text fails.
pub(crate) async fn embed(
    state: &AppState,
    d: &Deployment,
    texts: Vec<String>,
    headers: &HeaderMap,
) -> Result<EmbedResponse, ApiError> {
    let model = torch(d)?;
    let encoder = model
        .encoder()
        .cloned()
        .ok_or_else(|| ApiError::internal("a text model without a tokenizer"))?;
    let items = state
        .blocking(move || {
            texts
                .iter()
                .map(|t| encoder.encode(t).map_err(input))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    let answers = try_join_all(items.into_iter().map(|inputs| {
        let mask: Option<Vec<i64>> =
            inputs
                .iter()
                .find(|t| t.name == "attention_mask")
                .and_then(|t| match &t.tensor.data {
                    TensorData::Int64(v) => Some(v.clone()),
                    _ => None,
                });
        async move {
            let answer = run(state, d, inputs, headers).await?;
            Ok::<_, ApiError>((first_output(answer.outputs)?, mask))
        }
    }))
    .await?;
    let embeddings = state
        .blocking(move || {
            answers
                .iter()
                .map(|(out, mask)| post::embedding(&out.tensor, mask.as_deref()).map_err(input))
                .collect::<Result<Vec<_>, _>>()
        })
        .await?;
    Ok(EmbedResponse {
        model: d.config.name.clone(),
        embeddings,
    })
}

/// Finds the objects in one image (JPEG or PNG).
pub(crate) async fn detect(
    state: &AppState,
    d: &Deployment,
    image: Bytes,
    headers: &HeaderMap,
) -> Result<DetectResponse, ApiError> {
    let model = Arc::new(torch(d)?);
    let m = Arc::clone(&model);
    let limits = image_limits(state);
    let (tensor, letterbox) = state
        .blocking(move || {
            let image = img::decode(&image, &limits).map_err(input)?;
            Ok(img::letterbox(&image, m.manifest()))
        })
        .await?;
    let answer = run(state, d, vec![tensor], headers).await?;
    let out = first_output(answer.outputs)?;
    let found = state
        .blocking(move || {
            let (conf, iou, max) = match model.manifest().postprocess {
                Postprocess::Yolov8 {
                    conf,
                    iou,
                    max_detections,
                } => (conf, iou, max_detections),
                _ => (0.25, 0.45, 300),
            };
            post::detections(
                &out.tensor,
                &letterbox,
                conf,
                iou,
                max,
                &model.manifest().label_names,
            )
            .map_err(input)
        })
        .await?;
    Ok(DetectResponse {
        model: d.config.name.clone(),
        version: answer.version.to_string(),
        width: letterbox.width,
        height: letterbox.height,
        detections: found.into_iter().map(Detected::from).collect(),
    })
}
