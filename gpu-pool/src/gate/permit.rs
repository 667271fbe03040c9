use std::any::Any;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::BoxError;

use super::wfq::{Gate, Key};

/// An execution slot of the compute gate, held until dropped.
///
/// Dropping it accounts the time it was held against the tenant's share and
/// hands the slot to the next waiter.
pub struct SlotPermit {
    gate: Arc<Gate>,
    tenant: u32,
    granted_at: Instant,
    charged: f64,
    armed: bool,
}

impl SlotPermit {
    pub(super) fn new(gate: Arc<Gate>, tenant: u32, granted_at: Instant, charged: f64) -> Self {
        Self {
            gate,
            tenant,
            granted_at,
            charged,
            armed: true,
        }
    }

    pub(super) fn disarm(&mut self) {
        self.armed = false;
    }

    /// When the slot was granted.
    pub fn granted_at(&self) -> Instant {
        self.granted_at
    }
}

impl fmt::Debug for SlotPermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlotPermit")
            .field("tenant", &self.tenant)
            .field("granted_at", &self.granted_at)
            .finish()
    }
}

impl Drop for SlotPermit {
    fn drop(&mut self) {
        if self.armed {
            self.armed = false;
            self.gate
                .release(self.tenant, self.granted_at, self.charged);
        }
    }
}

/// Future of a slot: resolves to a [`SlotPermit`], or at once to
/// [`WaitQueueFull`](crate::WaitQueueFull) when the tenant already has
/// [`PoolConfig::max_waiting_acquires`](crate::PoolConfig::max_waiting_acquires)
/// requests waiting. Dropping it before it resolves withdraws the request
/// (and returns a slot granted meanwhile). While it waits it keeps its
/// tenant admitted, even if every [`Tenant`](crate::Tenant) handle is dropped.
pub struct Acquire {
    state: AcquireState,
}

enum AcquireState {
    Ready(Option<SlotPermit>),
    Failed(Option<BoxError>),
    Waiting {
        gate: Arc<Gate>,
        tenant: u32,
        key: Key,
        rx: oneshot::Receiver<SlotPermit>,
        /// Keeps the tenant (and its gate entry) alive while waiting.
        _owner: Arc<dyn Any + Send + Sync>,
    },
    Done,
}

impl Acquire {
    pub(super) fn ready(permit: SlotPermit) -> Self {
        Self {
            state: AcquireState::Ready(Some(permit)),
        }
    }

    pub(super) fn failed(err: BoxError) -> Self {
        Self {
            state: AcquireState::Failed(Some(err)),
        }
    }

    pub(super) fn waiting(
        gate: Arc<Gate>,
        tenant: u32,
        key: Key,
        rx: oneshot::Receiver<SlotPermit>,
        owner: Arc<dyn Any + Send + Sync>,
    ) -> Self {
        Self {
            state: AcquireState::Waiting {
                gate,
                tenant,
                key,
                rx,
                _owner: owner,
            },
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Ready(_) => "ready",
            AcquireState::Failed(_) => "failed",
            AcquireState::Waiting { .. } => "waiting",
            AcquireState::Done => "done",
        };
        f.debug_struct("Acquire").field("state", &state).finish()
    }
}

impl Future for Acquire {
    type Output = Result<SlotPermit, BoxError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        match &mut this.state {
            AcquireState::Ready(p) => {
                let permit = p.take();
                this.state = AcquireState::Done;
                match permit {
                    Some(p) => Poll::Ready(Ok(p)),
                    None => Poll::Pending,
                }
            }
            AcquireState::Failed(e) => {
                let err = e.take();
                this.state = AcquireState::Done;
                match err {
                    Some(e) => Poll::Ready(Err(e)),
                    None => Poll::Pending,
                }
            }
            AcquireState::Waiting { rx, .. } => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(res) => {
                    this.state = AcquireState::Done;
                    // The sender goes only with the tenant's gate entry,
                    // which this future keeps alive: not expected.
                    Poll::Ready(
                        res.map_err(|_| "the compute gate dropped a waiting request".into()),
                    )
                }
            },
            AcquireState::Done => Poll::Pending,
        }
    }
}

impl Drop for Acquire {
    fn drop(&mut self) {
        if let AcquireState::Waiting {
            gate,
            tenant,
            key,
            rx,
            ..
        } = &mut self.state
        {
            rx.close();
            // A permit sent before close is dropped with rx and frees its slot.
            gate.cancel(*tenant, *key);
        }
    }
}
