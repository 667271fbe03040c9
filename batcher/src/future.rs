//! The response future of [`Batch`](crate::Batch).

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tower::BoxError;

use crate::error::Closed;

enum State<Resp> {
    Waiting(oneshot::Receiver<Result<Resp, BoxError>>),
    Failed(Option<BoxError>),
}

/// Resolves to the request's own result once its batch has run.
///
/// Dropping it before then cancels the request: if it has not been
/// dispatched yet it never reaches the batch service.
pub struct ResponseFuture<Resp> {
    state: State<Resp>,
}

impl<Resp> ResponseFuture<Resp> {
    pub(crate) fn waiting(rx: oneshot::Receiver<Result<Resp, BoxError>>) -> Self {
        Self {
            state: State::Waiting(rx),
        }
    }

    pub(crate) fn failed(err: BoxError) -> Self {
        Self {
            state: State::Failed(Some(err)),
        }
    }
}

impl<Resp> fmt::Debug for ResponseFuture<Resp> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match &self.state {
            State::Waiting(_) => "waiting",
            State::Failed(_) => "failed",
        };
        f.debug_struct("ResponseFuture")
            .field("state", &state)
            .finish()
    }
}

impl<Resp> Future for ResponseFuture<Resp> {
    type Output = Result<Resp, BoxError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Every field is Unpin.
        let this = self.get_mut();
        match &mut this.state {
            State::Waiting(rx) => match Pin::new(rx).poll(cx) {
                Poll::Ready(Ok(result)) => Poll::Ready(result),
                // The worker dropped the request without answering: it ended.
                Poll::Ready(Err(_)) => Poll::Ready(Err(Closed::new().into())),
                Poll::Pending => Poll::Pending,
            },
            State::Failed(err) => Poll::Ready(Err(err
                .take()
                .expect("ResponseFuture polled after completion"))),
        }
    }
}
