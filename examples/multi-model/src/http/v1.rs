//! `GET /v1/models` and `POST /v1/models/{name}/{task}`: `infer` (JSON
//! tensors) for the identity model, `classify`, `embed` and `detect` for
//! the model kinds that answer them. `classify` and `detect` take one raw
//! image, `multipart/form-data` image parts or base64 JSON images; `embed`
//! takes JSON texts or `multipart/form-data` text parts. A request of
//! several parts is answered with a list, one entry per part in order: the
//! part's answer, or its own error.

use std::sync::Arc;

use std::future::Future;

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use example_kserve::ErrorBody;
use futures::future::join_all;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::docs::V1;
use super::tasks::{self, ClassifyResponse, DetectResponse, EmbedResponse, Texts};
use super::uploads::{self, Images, Upload, UploadForm};
use super::{ApiError, AppState, TensorsRequest, TensorsResponse, DEADLINE_HEADER, VERSION_HEADER};
use crate::config::{Batching, Replicas};
use crate::deploy::{BatchTotals, Deployment, Route, Served, Task, Tensors};
use crate::http::JsonTensor;
use crate::model::Kind;
use crate::rollout::RolloutInfo;

/// `GET /v1/models`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct ModelsResponse {
    /// Every deployment.
    pub models: Vec<DeploymentInfo>,
    /// The device pool's backend (`host` or `cuda`).
    pub pool_backend: String,
}

/// One deployment in [`ModelsResponse`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct DeploymentInfo {
    /// The name clients use.
    pub name: String,
    /// The model package (or `identity`).
    pub model: String,
    /// `identity`, `classify`, `embed`, `detect`.
    pub kind: String,
    /// The v1 route: `/v1/models/{name}/{route}`.
    pub route: String,
    /// Where it runs (`cpu`, `cuda:0`).
    pub device: String,
    /// Every version has a ready replica.
    pub ready: bool,
    /// Batching settings as configured.
    #[schema(value_type = Object)]
    pub batching: Batching,
    /// Replica bounds and autoscaling policy.
    #[schema(value_type = Object)]
    pub replicas: Replicas,
    /// The versions: the serving one first, the canary beside it while a
    /// rollout runs.
    pub versions: Vec<VersionInfo>,
    /// The registry source (`models:/...`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// The rollout running now, or the last one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub rollout: Option<RolloutInfo>,
    /// The registry's latest news (new versions, refusals, outages).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub registry: Vec<String>,
}

/// One version in [`DeploymentInfo`].
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VersionInfo {
    /// `1`, `2`...
    pub name: String,
    /// Split weight now.
    pub weight: f64,
    /// Requests the split routed to it.
    pub requests: u64,
    /// Of which failed.
    pub errors: u64,
    /// Replicas ready now.
    pub ready_replicas: u32,
    /// Replicas starting or ready.
    pub replicas: u32,
    /// Requests in flight now.
    pub in_flight: u64,
    /// Its batchers together (mean batch size, current cap...).
    pub batch: BatchStatsInfo,
    /// Memory of its tenant in use, bytes: pool buffers and, for a model
    /// loaded with example-models' allocator hooks, what libtorch holds for
    /// it (weights, a running batch's activations).
    pub tenant_bytes_in_use: u64,
    /// Highest `tenant_bytes_in_use` so far.
    pub tenant_bytes_peak: u64,
    /// Its tenant's memory quota, bytes (enforced on every allocation).
    pub tenant_bytes_quota: u64,
}

/// Batcher statistics of one version (see [`BatchTotals`]).
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BatchStatsInfo {
    /// Requests admitted.
    pub requests: u64,
    /// Batches dispatched.
    pub batches: u64,
    /// Requests refused.
    pub rejected: u64,
    /// Mean items per batch.
    pub mean_batch_size: f64,
    /// Queued now.
    pub queue_depth: usize,
    /// Batch size cap in force now.
    pub current_max_batch_size: usize,
    /// Extra forward passes run to isolate failing requests.
    pub isolation_passes: u64,
    /// Requests that failed alone after isolation.
    pub isolated_failures: u64,
    /// Batches that failed past the tenant's memory quota.
    pub quota_failed_batches: u64,
    /// The largest batch the replicas learned fits in the quota, once a
    /// batch failed past it.
    pub size_limit: Option<usize>,
}

impl From<BatchTotals> for BatchStatsInfo {
    fn from(t: BatchTotals) -> Self {
        Self {
            requests: t.requests,
            batches: t.batches,
            rejected: t.rejected,
            mean_batch_size: t.mean_batch_size,
            queue_depth: t.queue_depth,
            current_max_batch_size: t.current_max_batch_size,
            isolation_passes: t.isolation_passes,
            isolated_failures: t.isolated_failures,
            quota_failed_batches: t.quota_failed_batches,
            size_limit: t.size_limit,
        }
    }
}

fn info(d: &Deployment) -> DeploymentInfo {
    let snapshot = d.handle.snapshot();
    let all = d.versions();
    let versions = all
        .iter()
        .map(|v| {
            let b = snapshot.backends.iter().find(|b| b.name == *v.name);
            let counts = convoy_autoscale::Scaler::replicas(&v.replicas);
            let tenant = v.tenant.stats();
            VersionInfo {
                name: v.name.to_string(),
                weight: b.map_or(0.0, |b| b.weight),
                requests: b.map_or(0, |b| b.requests),
                errors: b.map_or(0, |b| b.errors),
                ready_replicas: counts.ready,
                replicas: counts.current,
                in_flight: v.observer.in_flight(),
                batch: v.batch_stats().into(),
                tenant_bytes_in_use: tenant.used_bytes,
                tenant_bytes_peak: tenant.peak_bytes,
                tenant_bytes_quota: tenant.quota_bytes,
            }
        })
        .collect();
    DeploymentInfo {
        name: d.config.name.clone(),
        model: d.config.model.clone(),
        kind: format!("{:?}", d.kind).to_lowercase(),
        route: d.kind.route().to_string(),
        device: all[0].model.device(),
        ready: d.ready(),
        batching: d.config.batching.clone(),
        replicas: d.config.replicas.clone(),
        versions,
        source: d.config.registry.as_ref().map(|s| match s {
            example_registry::ModelSource::Mlflow { name, selector } => match selector {
                example_registry::Selector::Version(v) => format!("models:/{name}/{v}"),
                example_registry::Selector::Stage(s) => format!("models:/{name}/{}", s.as_str()),
                example_registry::Selector::Alias(a) => format!("models:/{name}@{a}"),
            },
            example_registry::ModelSource::Path(p) => p.display().to_string(),
        }),
        rollout: d.status.rollout(),
        registry: d.status.registry(),
    }
}

/// Every deployment: versions, split weights, replicas, batching.
#[utoipa::path(get, path = "/v1/models", tag = V1, responses(
    (status = 200, description = "The deployments", body = ModelsResponse)))]
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> Json<ModelsResponse> {
    Json(ModelsResponse {
        models: state.server.deployments.iter().map(|d| info(d)).collect(),
        pool_backend: state.server.pool.backend_kind().to_string(),
    })
}

/// Runs one request through `d` ([`Deployment::call`]): pinned by
/// `x-convoy-version`, within the caller's `grpc-timeout` (as on KServe v2
/// REST) and the server's request timeout, whichever ends first; errors
/// answered by the server's one classification.
pub(crate) async fn call<T: Task>(
    d: &Deployment,
    task: T,
    headers: &HeaderMap,
) -> Result<Served<T::Output>, ApiError> {
    call_sticky(d, task, headers, None).await
}

/// [`call`] with a sticky key: calls with equal keys go to one version
/// while the weights stay (a request's parts, served alike).
pub(crate) async fn call_sticky<T: Task>(
    d: &Deployment,
    task: T,
    headers: &HeaderMap,
    sticky: Option<u64>,
) -> Result<Served<T::Output>, ApiError> {
    let pinned = headers
        .get(VERSION_HEADER)
        .map(|v| v.to_str().unwrap_or_default().to_string());
    let deadline = match headers.get(DEADLINE_HEADER) {
        None => None,
        Some(v) => {
            let timeout = v
                .to_str()
                .ok()
                .and_then(example_kserve::parse_grpc_timeout)
                .ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "{DEADLINE_HEADER} {v:?} is not a timeout such as 100m"
                    ))
                })?;
            Some(tokio::time::Instant::now() + timeout)
        }
    };
    let route = Route::new()
        .pinned(pinned)
        .deadline(deadline)
        .sticky(sticky);
    d.call(task, route).await.map_err(|e| {
        let id = headers
            .get(super::REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map_or_else(crate::error::new_request_id, str::to_string);
        ApiError::from_service(e, &id)
    })
}

/// The request body of a task in JSON: tensors for `infer`, texts for
/// `embed`, base64 images for `classify` and `detect`.
#[derive(Deserialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // only documents the bodies: each task parses its own
enum JsonTask {
    Tensors(TensorsRequest),
    Texts(Texts),
    Images(Images),
}

/// A task's answer to one input.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum TaskResponse {
    Infer(TensorsResponse),
    Classify(ClassifyResponse),
    Embed(EmbedResponse),
    Detect(DetectResponse),
}

impl From<ClassifyResponse> for TaskResponse {
    fn from(r: ClassifyResponse) -> Self {
        Self::Classify(r)
    }
}

impl From<EmbedResponse> for TaskResponse {
    fn from(r: EmbedResponse) -> Self {
        Self::Embed(r)
    }
}

impl From<DetectResponse> for TaskResponse {
    fn from(r: DetectResponse) -> Self {
        Self::Detect(r)
    }
}

/// The answer to a request: one answer, or one entry per part.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum V1Response {
    /// One input (a raw body, JSON tensors or texts, one multipart part).
    One(TaskResponse),
    /// Several parts (or a `files` field, or JSON images): one entry per
    /// part, in the order sent.
    Parts(Vec<PartResponse>),
}

/// One part's entry in a list answer: what the part alone would have been
/// answered.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum PartResponse {
    /// The part's answer.
    Answer(TaskResponse),
    /// Why the part was refused or failed; the other parts are answered.
    Error(PartError),
}

/// A part that failed, in a list answer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct PartError {
    /// What went wrong with this part.
    pub error: String,
    /// The HTTP status the part alone would have been answered with.
    pub status: u16,
}

impl From<ApiError> for PartError {
    fn from(e: ApiError) -> Self {
        Self {
            error: e.message,
            status: e.status.as_u16(),
        }
    }
}

/// Runs a deployment's task.
///
/// `infer` (JSON tensors, identity models), `classify` (images, ResNet-50),
/// `embed` (texts, MiniLM) or `detect` (images, YOLOv8n); `GET /v1/models`
/// says each deployment's route.
///
/// Images come as a raw JPEG or PNG body, as `multipart/form-data` parts
/// (any field name, one image each: `curl -F file=@cat.jpg`), or as JSON
/// `{"images": ["<base64>", ...]}`; texts as JSON `{"texts": [...]}` or as
/// `multipart/form-data` parts. Several parts (or a `files` field, or JSON
/// images) are answered with a list, one entry per part in order: its
/// answer, or `{"error": ..., "status": ...}` for a part that failed alone.
/// Each part is its own item for the batcher.
#[utoipa::path(post, path = "/v1/models/{name}/{task}", tag = V1,
    params(
        ("name" = String, Path, description = "The deployment", example = "resnet50"),
        ("task" = String, Path, description = "Its route: `infer`, `classify`, `embed` or `detect`",
            example = "classify"),
        ("x-convoy-version" = Option<String>, Header, description = "Pins the request to a version"),
        ("grpc-timeout" = Option<String>, Header, description = "The request's own deadline in \
            gRPC's format (`100m` is 100 ms, `2S` two seconds); it ends at the earlier of this \
            and the server's request timeout"),
    ),
    request_body(description = "Images for `classify` and `detect` (multipart parts, base64 JSON, \
        or one raw image), texts for `embed` (JSON or multipart parts), JSON tensors for `infer`",
        content((UploadForm = "multipart/form-data"), (JsonTask = "application/json"),
            ("image/jpeg"), ("image/png"))),
    responses(
        (status = 200, description = "The task's answer, or a list of one entry per part",
            body = V1Response),
        (status = 400, description = "Malformed request", body = ErrorBody),
        (status = 404, description = "No such model, or not its task", body = ErrorBody),
        (status = 413, description = "Over a limit: the body over the server's body_limit, \
            more parts than server.uploads.max_parts, or (one input) a part over \
            server.uploads.max_part_bytes or an image over server.uploads.max_pixels",
            body = ErrorBody),
        (status = 415, description = "A multipart body for `infer`", body = ErrorBody),
        (status = 422, description = "Well formed, but not something the model takes", body = ErrorBody),
        (status = 503, description = "Overloaded or not ready", body = ErrorBody),
        (status = 504, description = "Not answered within the request timeout or the request's \
            grpc-timeout", body = ErrorBody),
    ))]
pub(crate) async fn task(
    State(state): State<Arc<AppState>>,
    Path((name, task)): Path<(String, String)>,
    headers: HeaderMap,
    request: Request,
) -> Result<Json<V1Response>, ApiError> {
    let server = Arc::clone(&state.server);
    let d = server
        .deployment(&name)
        .ok_or_else(|| ApiError::not_found(format!("no model {name:?}")))?;
    if task != d.kind.route() {
        return Err(ApiError::not_found(format!(
            "model {name:?} answers POST /v1/models/{name}/{}, not /{task}",
            d.kind.route()
        )));
    }
    let limits = server.config.server.uploads;
    let multipart = uploads::is_multipart(&request);
    let state = &state;
    let headers = &headers;
    let answer = match d.kind {
        Kind::Identity if multipart => {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "infer takes JSON tensors, not multipart/form-data",
            ))
        }
        Kind::Identity => V1Response::One(TaskResponse::Infer(
            infer(state, d, body(request).await?, headers).await?,
        )),
        Kind::Embed if multipart => {
            let upload = uploads::multipart(request, &limits).await?;
            each_part(upload, |part| async move {
                tasks::embed(state, d, vec![tasks::text_part(part)?], headers).await
            })
            .await?
        }
        Kind::Embed => {
            let body = body(request).await?;
            let texts = state.blocking(move || tasks::json_texts(&body)).await?;
            V1Response::One(tasks::embed(state, d, texts, headers).await?.into())
        }
        Kind::Classify | Kind::Detect => {
            let upload = if multipart {
                uploads::multipart(request, &limits).await?
            } else {
                images(state, body(request).await?).await?
            };
            if d.kind == Kind::Classify {
                each_part(upload, |part| tasks::classify(state, d, part, headers)).await?
            } else {
                each_part(upload, |part| tasks::detect(state, d, part, headers)).await?
            }
        }
    };
    Ok(Json(answer))
}

/// The whole body of `request`, within the server's body limit.
async fn body(request: Request) -> Result<Bytes, ApiError> {
    Ok(Bytes::from_request(request, &()).await?)
}

/// The images of a non-multipart body: JSON base64 images, or one raw image.
async fn images(state: &AppState, body: Bytes) -> Result<Upload, ApiError> {
    if !uploads::is_json_object(&body) {
        return Ok(Upload::single(body));
    }
    let limits = state.server.config.server.uploads;
    state
        .blocking(move || uploads::json_images(&body, &limits))
        .await
}

/// Answers every part of `upload` with `answer`, all at once: each part is
/// its own item for the batcher, so the parts batch with each other and
/// with other requests. A list answer holds one entry per part, a failed
/// part's error among the others' answers; a single answer is the part's
/// answer or its error.
async fn each_part<T, F, Fut>(upload: Upload, answer: F) -> Result<V1Response, ApiError>
where
    F: Fn(Bytes) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
    T: Into<TaskResponse>,
{
    let answers = join_all(upload.parts.into_iter().map(|part| async {
        match part {
            Ok(bytes) => answer(bytes).await,
            Err(e) => Err(e),
        }
    }))
    .await;
    if upload.list {
        return Ok(V1Response::Parts(
            answers
                .into_iter()
                .map(|a| match a {
                    Ok(a) => PartResponse::Answer(a.into()),
                    Err(e) => PartResponse::Error(e.into()),
                })
                .collect(),
        ));
    }
    let one = answers
        .into_iter()
        .next()
        .ok_or_else(|| ApiError::bad_request("the request has no image or text"))?;
    Ok(V1Response::One(one?.into()))
}
/// `infer`: JSON tensors in, JSON tensors out.
async fn infer(
    state: &AppState,
    d: &Deployment,
    body: Bytes,
    headers: &HeaderMap,
) -> Result<TensorsResponse, ApiError> {
    let inputs = state
        .blocking(move || {
            let req: TensorsRequest = serde_json::from_slice(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
            if req.inputs.is_empty() {
                return Err(ApiError::unprocessable("inputs: at least one tensor"));
            }
            // The model's contract (rows, shapes...) is checked by the
            // version that serves the request.
            req.inputs.iter().map(JsonTensor::decode).collect()
        })
        .await?;
    let answer = call(d, Tensors::new(inputs), headers).await?;
    Ok(TensorsResponse {
        model_name: d.config.name.clone(),
        model_version: answer.version.to_string(),
        outputs: answer.output.iter().map(JsonTensor::encode).collect(),
    })
}
