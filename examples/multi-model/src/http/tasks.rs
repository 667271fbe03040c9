//! `classify`, `embed` and `detect`: decoding, tokenizing and the
//! post-processing run on the blocking threads (bounded), the forward pass
//! through the deployment. Preprocessing follows the first version's
//! manifest: the versions of a deployment share their input format.

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::HeaderMap;
use example_models::image::{self as img, ImageLimits};
use example_models::{post, InputError, Postprocess};
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
    /// The most probable classes, best first: `index`, `label`, `score`.
    pub classes: Vec<serde_json::Value>,
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
    /// Boxes (`bbox` = x1, y1, x2, y2 in image pixels), `class`, `label`, `score`.
    pub detections: Vec<serde_json::Value>,
}

fn input(e: InputError) -> ApiError {
    ApiError::unprocessable(e.to_string())
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

pub(crate) async fn classify(
    state: &AppState,
    d: &Deployment,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<ClassifyResponse, ApiError> {
    let model = torch(d)?;
    let m = model.clone();
    let tensor = state
        .blocking(move || {
            let image = img::decode(&body, &ImageLimits::default()).map_err(input)?;
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
        classes: classes.iter().map(|c| serde_json::json!(c)).collect(),
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

pub(crate) async fn embed(
    state: &AppState,
    d: &Deployment,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<EmbedResponse, ApiError> {
    let model = torch(d)?;
    let encoder = model
        .encoder()
        .cloned()
        .ok_or_else(|| ApiError::internal("a text model without a tokenizer"))?;
    let items = state
        .blocking(move || {
            let texts = match serde_json::from_slice::<Texts>(&body) {
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

pub(crate) async fn detect(
    state: &AppState,
    d: &Deployment,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<DetectResponse, ApiError> {
    let model = Arc::new(torch(d)?);
    let m = Arc::clone(&model);
    let (tensor, letterbox) = state
        .blocking(move || {
            let image = img::decode(&body, &ImageLimits::default()).map_err(input)?;
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
        detections: found.iter().map(|x| serde_json::json!(x)).collect(),
    })
}
