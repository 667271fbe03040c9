//! Load signals: samples, the look-back [`Window`] and pull sources.
//!
//! [`LoadObserver`] measures a deployment at its front door (in flight,
//! arrivals, completions, latency quantiles) through [`ObserveLayer`];
//! `BatcherSource` (feature `batcher`) reads a batcher's statistics.
//!
//! Samples reach the engine two ways: pushed with
//! [`Engine::record`](crate::Engine::record) (or
//! [`AutoscalerHandle::record`](crate::AutoscalerHandle::record)), or pulled
//! once per tick from a [`SignalSource`] given to the
//! [`Autoscaler`](crate::Autoscaler).

#[cfg(feature = "batcher")]
mod batcher;
mod histogram;
mod observe;
mod sample;
mod window;

use std::time::Duration;

#[cfg(feature = "batcher")]
pub use self::batcher::{BatcherSet, BatcherSource};
pub use self::observe::{Layered, LoadObserver, Observe, ObserveFuture, ObserveLayer};
pub use self::sample::{BatchCost, Counter, LoadSample, Signal};
pub use self::window::{Window, WindowView};

/// A source of load samples, pulled by the engine's driver once per interval.
///
/// `now` is the driver's time (a [`Duration`] since its start, or simulated
/// time). Return `None` when no fresh data is available: missing data is
/// handled conservatively by the policies.
pub trait SignalSource: Send {
    /// Takes a sample of the current load.
    fn sample(&mut self, now: Duration) -> Option<LoadSample>;
}

impl<F> SignalSource for F
where
    F: FnMut(Duration) -> Option<LoadSample> + Send,
{
    fn sample(&mut self, now: Duration) -> Option<LoadSample> {
        self(now)
    }
}

#[cfg(test)]
mod tests;
