//! The per-version step around the forward pass: a request's pre- and
//! post-processing follow the rules of the version that serves it (its
//! manifest: labels, tokenizer, image size), so a canary with its own
//! manifest is processed by its own rules.
//!
//! The split chooses the version first; then that version's [`Step`] runs
//! the request's [`Task`]: `pre` with the version's model, the model's
//! contract on what `pre` made, the forward pass (batcher, replicas), and
//! `post` with the same model. The split's latency of a version (what a
//! rollout compares) therefore includes its pre- and post-processing; the
//! per-version metrics below the step (`convoy_server_request_seconds`)
//! and the autoscalers' signals do not.

use std::any::Any;
use std::sync::Arc;
use std::task::{Context, Poll};

use convoy_router::split::Override;
use example_tensor::NamedTensor;
use futures::future::BoxFuture;
use futures::FutureExt;
use tokio::time::Instant;
use tower::{BoxError, Service, ServiceExt};

use super::{Answer, Item, Route};
use crate::model::Forward;

/// What [`Task::pre`] makes: the model's inputs, and what it keeps for
/// [`Task::post`].
pub type Prepared<K> = BoxFuture<'static, Result<(Vec<NamedTensor>, K), BoxError>>;

/// What a request asks of a deployment, processed by the version that
/// serves it. [`Tensors`] is the task of a request that brings the model's
/// tensors (v1 `infer`, KServe v2); the v1 `classify`, `embed` and
/// `detect` tasks decode, tokenize and label by the serving version's
/// manifest.
pub trait Task: Send + 'static {
    /// What `pre` keeps for `post` (a text's attention mask, an image's
    /// letterbox).
    type Kept: Send + 'static;
    /// The caller's answer.
    type Output: Send + 'static;

    /// The model's inputs for this request by `model`'s rules. An error
    /// here is the caller's (the input does not fit this version): it is
    /// answered as is and not counted against the version.
    fn pre(&mut self, model: &Arc<dyn Forward>) -> Prepared<Self::Kept>;

    /// The answer made of the model's `outputs`, by the same `model`'s
    /// rules.
    fn post(
        &self,
        model: &Arc<dyn Forward>,
        kept: Self::Kept,
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Self::Output, BoxError>>;
}

/// A request that brings the model's tensors: no pre- or post-processing.
#[derive(Debug)]
pub struct Tensors(Option<Vec<NamedTensor>>);

impl Tensors {
    /// The task of `inputs`.
    pub fn new(inputs: Vec<NamedTensor>) -> Self {
        Self(Some(inputs))
    }
}

impl Task for Tensors {
    type Kept = ();
    type Output = Vec<NamedTensor>;

    fn pre(&mut self, _: &Arc<dyn Forward>) -> Prepared<()> {
        let inputs = self.0.take().ok_or("a request's tensors are taken once");
        async move { Ok((inputs?, ())) }.boxed()
    }

    fn post(
        &self,
        _: &Arc<dyn Forward>,
        _: (),
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Vec<NamedTensor>, BoxError>> {
        async move { Ok(outputs) }.boxed()
    }
}

/// A [`Task`] of any type, for the split (whose requests are one type).
trait Erased: Send {
    fn pre<'a>(
        &'a mut self,
        model: &'a Arc<dyn Forward>,
    ) -> BoxFuture<'a, Result<Vec<NamedTensor>, BoxError>>;

    fn post(
        self: Box<Self>,
        model: &Arc<dyn Forward>,
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Box<dyn Any + Send>, BoxError>>;
}

struct Held<T: Task> {
    task: T,
    kept: Option<T::Kept>,
}

impl<T: Task> Erased for Held<T> {
    fn pre<'a>(
        &'a mut self,
        model: &'a Arc<dyn Forward>,
    ) -> BoxFuture<'a, Result<Vec<NamedTensor>, BoxError>> {
        let made = self.task.pre(model);
        async move {
            let (inputs, kept) = made.await?;
            self.kept = Some(kept);
            Ok(inputs)
        }
        .boxed()
    }

    fn post(
        self: Box<Self>,
        model: &Arc<dyn Forward>,
        outputs: Vec<NamedTensor>,
    ) -> BoxFuture<'static, Result<Box<dyn Any + Send>, BoxError>> {
        let Some(kept) = self.kept else {
            return async { Err("post-processing before pre-processing".into()) }.boxed();
        };
        let answer = self.task.post(model, kept, outputs);
        async move { Ok(Box::new(answer.await?) as Box<dyn Any + Send>) }.boxed()
    }
}

/// One request as the split sees it: its task and how it is routed.
pub struct Call {
    task: Box<dyn Erased>,
    pub(super) route: Route,
    /// When the request ends (the earlier of the caller's deadline and the
    /// server's request timeout): the batcher drops it unserved then.
    deadline: Instant,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Call")
            .field("route", &self.route)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Call {
    pub(super) fn new<T: Task>(task: T, route: Route, deadline: Instant) -> Self {
        Self {
            task: Box::new(Held { task, kept: None }),
            route,
            deadline,
        }
    }
}

/// A version's reply to a [`Call`]: the answer (of the task's output
/// type), or the caller's own error, found before the model and not the
/// version's failure (the split's error count, which a rollout analyses,
/// leaves it out).
#[derive(Debug)]
pub struct Reply {
    /// The version that served the request.
    pub version: Arc<str>,
    /// The task's output, or the caller's error.
    pub(super) result: Result<Box<dyn Any + Send>, BoxError>,
}

/// The version named by the request's route, if any.
#[derive(Debug, Clone, Copy)]
pub(super) struct Pinned;

impl Override<Call> for Pinned {
    fn backend<'a>(&'a self, req: &'a Call) -> Option<&'a str> {
        req.route.pinned.as_deref()
    }
}

/// A version below its step: its [`VersionService`](super::VersionService),
/// or that service with a mirror to the stable version while it is a canary
/// with a drift check (see `crate::rollout`).
pub type ItemService = tower::util::BoxCloneSyncService<Item, Answer, BoxError>;

/// One version's step: its model's pre-processing, contract, forward pass
/// (through `inner`) and post-processing.
#[derive(Clone)]
pub(super) struct Step {
    pub(super) version: Arc<str>,
    pub(super) model: Arc<dyn Forward>,
    pub(super) inner: ItemService,
}

impl Service<Call> for Step {
    type Response = Reply;
    type Error = BoxError;
    type Future = BoxFuture<'static, Result<Reply, BoxError>>;

    /// Always ready: the forward pass waits for the version's readiness
    /// after the pre-processing.
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let (version, model, inner) = (
            Arc::clone(&self.version),
            Arc::clone(&self.model),
            self.inner.clone(),
        );
        async move {
            let Call {
                mut task, deadline, ..
            } = call;
            let refused = |e: BoxError| Reply {
                version: Arc::clone(&version),
                result: Err(e),
            };
            let inputs = match task.pre(&model).await {
                Ok(inputs) => inputs,
                Err(e) => return Ok(refused(e)),
            };
            // The model's contract, before the request joins a batch.
            if let Err(e) = model.contract().check(&inputs) {
                return Ok(refused(e.into()));
            }
            let mut item = Item::new(inputs, model.kind());
            item.deadline = Some(deadline);
            let answer = inner.oneshot(item).await?;
            let output = task.post(&model, answer.outputs).await?;
            Ok(Reply {
                version: answer.version,
                result: Ok(output),
            })
        }
        .boxed()
    }
}
