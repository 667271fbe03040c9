//! The engine: guard rails around a policy, and the async driver.
//!
//! [`Engine`] is a pure synchronous step (the simulator calls it in virtual
//! time); [`Autoscaler`] runs it on the tokio clock against a [`Scaler`].

mod config;
mod driver;
mod evaluate;
mod scaler;

pub use self::config::EngineConfig;
pub use self::driver::{Autoscaler, AutoscalerHandle};
pub use self::evaluate::{Engine, ReplicaCounts, ScaleDecision};
pub use self::scaler::Scaler;

#[cfg(test)]
mod tests;
