//! `classify`, `embed` and `detect` of one image or a list of texts, each
//! a [`Task`] of [`Deployment::call`]: decoding, tokenizing and the
//! post-processing run on the blocking threads (bounded), by the manifest
//! of the version that serves the request (a canary with its own labels,
//! tokenizer or image size is processed by its own rules), the forward
//! pass through the deployment. A request of several parts calls these
//! once per part (see `v1`).

use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use example_models::image::{self as img, ImageLimits, Letterbox};
use example_models::{post, InputError, InputErrorKind, Postprocess};
use example_tensor::{NamedTensor, TensorData};
use futures::future::{try_join_all, BoxFuture};
use futures::FutureExt;
use serde::{Deserialize, Serialize};
use tower::BoxError;
use utoipa::ToSchema;

use super::v1::{call, call_sticky};
use super::{ApiError, AppState};
use crate::deploy::{Deployment, Prepared, Task};
use crate::model::{Forward, TorchModel};

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

/// The TorchScript model of a version, for its manifest and tokenizer.
fn torch(model: &Arc<dyn Forward>) -> Result<TorchModel, ApiError> {
    model
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

/// Runs `f` on the blocking threads of `state`, as a task step.
fn blocking<T, F>(state: &Arc<AppState>, f: F) -> BoxFuture<'static, Result<T, BoxError>>
where
    F: FnOnce() -> Result<T, ApiError> + Send + 'static,
    T: Send + 'static,
{
    let state = Arc::clone(state);
    async move { Ok(state.blocking(f).await?) }.boxed()
}

/// One image to classify: decoded, resized and cropped by the serving
/// version's manifest, answered with its top classes and labels.
struct Classify {
    state: Arc<AppState>,
    image: Bytes,
}

impl Task for Classify {
    type Kept = ();
    type Output = Vec<post::Class>;

    fn pre(&mut self, model: &Arc<dyn Forward>) -> Prepared<()> {
        let (model, image) = (torch(model), self.image.clone());
        let limits = image_limits(&self.state);
        blocking(&self.state, move || {
            let model = model?;
            let image = img::decode(&image, &limits).map_err(input)?;
            Ok((vec![img::classify_input(&image, model.manifest())], ()))
        })
    }

    fn post(
        &self,
        model: &Arc<dyn Forward>,
        _: (),
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Vec<post::Class>, BoxError>> {
        let model = torch(model);
        blocking(&self.state, move || {
            let (model, logits) = (model?, first_output(outputs)?);
            let k = match model.manifest().postprocess {
                Postprocess::TopK { k } => k,
                _ => 5,
            };
            let TensorData::Fp32(v) = &logits.tensor.data else {
                return Err(ApiError::internal("logits must be FP32"));
            };
            Ok(post::top_k(v, k, &model.manifest().label_names))
        })
    }
}

/// Classifies one image (JPEG or PNG).
pub(crate) async fn classify(
    state: &Arc<AppState>,
    d: &Deployment,
    image: Bytes,
    headers: &HeaderMap,
) -> Result<ClassifyResponse, ApiError> {
    let task = Classify {
        state: Arc::clone(state),
        image,
    };
    let answer = call(d, task, headers).await?;
    Ok(ClassifyResponse {
        model: d.config.name.clone(),
        version: answer.version.to_string(),
        classes: answer.output.into_iter().map(ClassScore::from).collect(),
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

/// The texts of one `embed` request, tokenized together: the first of
/// its tasks to reach a version runs that version's tokenizer over all of
/// them in one blocking step (`TextEncoder::encode_many`), the others take
/// their own text's inputs from it. Versions are told apart by their
/// model, so a request split over two versions is tokenized by each
/// version's own tokenizer.
struct RequestTexts {
    texts: Vec<Arc<str>>,
    by_model: parking_lot::Mutex<Vec<ByModel>>,
}

/// Each text's inputs (or why it cannot be encoded), by one version.
type Encoded = tokio::sync::OnceCell<Arc<Vec<Result<Vec<NamedTensor>, InputError>>>>;

/// A version's model and its encoding of the texts.
type ByModel = (Arc<dyn Forward>, Arc<Encoded>);

impl RequestTexts {
    fn new(texts: Vec<String>) -> Arc<Self> {
        Arc::new(Self {
            texts: texts.into_iter().map(Arc::from).collect(),
            by_model: parking_lot::Mutex::default(),
        })
    }

    /// Every text encoded by `model`'s tokenizer: once per model.
    async fn encoded(
        self: Arc<Self>,
        state: Arc<AppState>,
        model: Arc<dyn Forward>,
    ) -> Result<Arc<Vec<Result<Vec<NamedTensor>, InputError>>>, ApiError> {
        let cell = {
            let mut by_model = self.by_model.lock();
            match by_model.iter().find(|(m, _)| Arc::ptr_eq(m, &model)) {
                Some((_, cell)) => Arc::clone(cell),
                None => {
                    let cell = Arc::new(Encoded::new());
                    by_model.push((Arc::clone(&model), Arc::clone(&cell)));
                    cell
                }
            }
        };
        cell.get_or_try_init(|| async move {
            state
                .blocking(move || {
                    let encoder = torch(&model)?
                        .encoder()
                        .cloned()
                        .ok_or_else(|| ApiError::internal("a text model without a tokenizer"))?;
                    Ok(Arc::new(encoder.encode_many(&self.texts)))
                })
                .await
        })
        .await
        .map(Arc::clone)
    }
}

/// One text of an `embed` request: tokenized by the serving version's
/// tokenizer (with the request's other texts, see [`RequestTexts`]),
/// answered with its embedding (mean-pooled over its attention mask).
struct Embed {
    state: Arc<AppState>,
    texts: Arc<RequestTexts>,
    index: usize,
}

impl Task for Embed {
    /// The text's attention mask.
    type Kept = Option<Vec<i64>>;
    type Output = Vec<f32>;

    fn pre(&mut self, model: &Arc<dyn Forward>) -> Prepared<Self::Kept> {
        let encoded = Arc::clone(&self.texts).encoded(Arc::clone(&self.state), Arc::clone(model));
        let index = self.index;
        async move {
            let all = encoded.await?;
            let inputs = match &all[index] {
                Ok(inputs) => inputs.clone(),
                Err(e) => return Err(input(e.clone()).into()),
            };
            let mask = inputs
                .iter()
                .find(|t| t.name == "attention_mask")
                .and_then(|t| match &t.tensor.data {
                    TensorData::Int64(v) => Some(v.clone()),
                    _ => None,
                });
            Ok((inputs, mask))
        }
        .boxed()
    }

    fn post(
        &self,
        _: &Arc<dyn Forward>,
        mask: Self::Kept,
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Vec<f32>, BoxError>> {
        blocking(&self.state, move || {
            let out = first_output(outputs)?;
            post::embedding(&out.tensor, mask.as_deref()).map_err(input)
        })
    }
}

/// Embeds `texts`, each its own item for the batcher (tokenized together,
/// see [`RequestTexts`]); fails as a whole if one text fails. A request of
/// several texts goes to one version (a sticky key of its own), so its
/// texts are tokenized once.
pub(crate) async fn embed(
    state: &Arc<AppState>,
    d: &Deployment,
    texts: Vec<String>,
    headers: &HeaderMap,
) -> Result<EmbedResponse, ApiError> {
    let sticky = (texts.len() > 1).then(rand::random::<u64>);
    let shared = RequestTexts::new(texts);
    let answers = try_join_all((0..shared.texts.len()).map(|index| {
        let task = Embed {
            state: Arc::clone(state),
            texts: Arc::clone(&shared),
            index,
        };
        call_sticky(d, task, headers, sticky)
    }))
    .await?;
    Ok(EmbedResponse {
        model: d.config.name.clone(),
        embeddings: answers.into_iter().map(|a| a.output).collect(),
    })
}

/// One image to search for objects: letterboxed by the serving version's
/// manifest, its boxes mapped back and labelled by the same manifest.
struct Detect {
    state: Arc<AppState>,
    image: Bytes,
}

impl Task for Detect {
    type Kept = Letterbox;
    type Output = (Letterbox, Vec<post::Detection>);

    fn pre(&mut self, model: &Arc<dyn Forward>) -> Prepared<Letterbox> {
        let (model, image) = (torch(model), self.image.clone());
        let limits = image_limits(&self.state);
        blocking(&self.state, move || {
            let model = model?;
            let image = img::decode(&image, &limits).map_err(input)?;
            let (tensor, letterbox) = img::letterbox(&image, model.manifest());
            Ok((vec![tensor], letterbox))
        })
    }

    fn post(
        &self,
        model: &Arc<dyn Forward>,
        letterbox: Letterbox,
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Self::Output, BoxError>> {
        let model = torch(model);
        blocking(&self.state, move || {
            let (model, out) = (model?, first_output(outputs)?);
            let (conf, iou, max) = match model.manifest().postprocess {
                Postprocess::Yolov8 {
                    conf,
                    iou,
                    max_detections,
                } => (conf, iou, max_detections),
                _ => (0.25, 0.45, 300),
            };
            let found = post::detections(
                &out.tensor,
                &letterbox,
                conf,
                iou,
                max,
                &model.manifest().label_names,
            )
            .map_err(input)?;
            Ok((letterbox, found))
        })
    }
}

/// Finds the objects in one image (JPEG or PNG).
pub(crate) async fn detect(
    state: &Arc<AppState>,
    d: &Deployment,
    image: Bytes,
    headers: &HeaderMap,
) -> Result<DetectResponse, ApiError> {
    let task = Detect {
        state: Arc::clone(state),
        image,
    };
    let answer = call(d, task, headers).await?;
    let (letterbox, found) = answer.output;
    Ok(DetectResponse {
        model: d.config.name.clone(),
        version: answer.version.to_string(),
        width: letterbox.width,
        height: letterbox.height,
        detections: found.into_iter().map(Detected::from).collect(),
    })
}
