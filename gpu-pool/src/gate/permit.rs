use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync::oneshot;
use tokio::time::Instant;

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

    pub(super) fn unmetered(gate: Arc<Gate>, tenant: u32) -> Self {
        let mut p = Self::new(gate, tenant, Instant::now(), 0.0);
        p.armed = false;
        p
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

/// Future of a slot: resolves to a [`SlotPermit`]. Dropping it before it
/// resolves withdraws the request (and returns a slot granted meanwhile).
pub struct Acquire {
    state: AcquireState,
}

enum AcquireState {
    Ready(Option<SlotPermit>),
    Waiting {
        gate: Arc<Gate>,
        tenant: u32,
        key: Key,
        rx: oneshot::Receiver<SlotPermit>,
    },
    Done,
}

impl Acquire {
    pub(super) fn ready(permit: SlotPermit) -> Self {
        Self {
            state: AcquireState::Ready(Some(permit)),
        }
    }

    pub(super) fn waiting(
        gate: Arc<Gate>,
        tenant: u32,
        key: Key,
        rx: oneshot::Receiver<SlotPermit>,
    ) -> Self {
        Self {
            state: AcquireState::Waiting {
                gate,
                tenant,
                key,
                rx,
            },
        }
    }
}

impl fmt::Debug for Acquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = match self.state {
            AcquireState::Ready(_) => "ready",
            AcquireState::Waiting { .. } => "waiting",
            AcquireState::Done => "done",
        };
        f.debug_struct("Acquire").field("state", &state).finish()
    }
}

impl Future for Acquire {
    type Output = SlotPermit;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<SlotPermit> {
        let this = &mut *self;
        match &mut this.state {
            AcquireState::Ready(p) => {
                let permit = p.take();
                this.state = AcquireState::Done;
                match permit {
                    Some(p) => Poll::Ready(p),
                    None => Poll::Pending,
                }
            }
            AcquireState::Waiting {
                gate,
                tenant,
                key,
                rx,
            } => match Pin::new(rx).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(permit)) => {
                    this.state = AcquireState::Done;
                    Poll::Ready(permit)
                }
                Poll::Ready(Err(_)) => {
                    // The tenant's entry went away (cannot happen while this
                    // future keeps the tenant alive): queue again.
                    let (gate, tenant, key) = (gate.clone(), *tenant, *key);
                    let priority = key.0 .0;
                    this.state = AcquireState::Done;
                    let mut again =
                        gate.acquire(tenant, crate::pool::Priority::from_level(priority));
                    let res = Pin::new(&mut again).poll(cx);
                    this.state = std::mem::replace(&mut again.state, AcquireState::Done);
                    res
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
        } = &mut self.state
        {
            rx.close();
            // A permit sent before close is dropped with rx and frees its slot.
            gate.cancel(*tenant, *key);
        }
    }
}
