//! The compute share gate: a weighted-fair queue of execution slots per
//! device.
//!
//! Each tenant has a weight. When a slot frees up it goes to the waiting
//! tenant with the smallest virtual start tag (start-time fair queueing:
//! each grant advances the tenant's tag by its expected hold time divided
//! by its weight, corrected by the measured hold time on release). So
//! saturated tenants get slot time in proportion to their weights, an idle
//! tenant banks nothing (its tag restarts at the virtual clock), and a free
//! slot is never left idle while anyone waits (work conserving). Priority
//! orders a tenant's own waiting work and breaks ties between tenants.

mod permit;
mod wfq;

pub use permit::{Acquire, SlotPermit};
pub(crate) use wfq::Gate;
pub use wfq::SlotUsage;
