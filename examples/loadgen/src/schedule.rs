//! Open-loop arrival schedules.
//!
//! An open-loop run sends request `i` at its *intended* time `start +
//! offset(i)` whatever happened to the requests before it, and measures
//! its latency from that intended time. A server (or a load generator)
//! that stalls therefore shows the stall in every request scheduled during
//! it, instead of in one slow sample (coordinated omission).

use std::time::Duration;

use rand::{rngs::StdRng, SeedableRng};
use rand_distr::{Distribution, Exp};

use crate::LoadError;

/// Poisson arrivals: independent, exponentially distributed gaps with mean
/// `1 / rate`, from a seeded RNG, so a run's schedule is reproducible.
///
/// ```
/// use loadgen::schedule::PoissonSchedule;
///
/// let offsets: Vec<_> = PoissonSchedule::new(100.0, 7).unwrap().take(1000).collect();
/// assert!(offsets.windows(2).all(|w| w[0] <= w[1]));
/// // About 1000 arrivals in about 10 s.
/// assert!((offsets[999].as_secs_f64() - 10.0).abs() < 1.5);
/// ```
#[derive(Debug, Clone)]
pub struct PoissonSchedule {
    rng: StdRng,
    gaps: Exp<f64>,
    at_s: f64,
}

impl PoissonSchedule {
    /// Arrivals at `rate` per second on average, drawn from `seed`. The
    /// rate must be finite and above zero.
    pub fn new(rate: f64, seed: u64) -> Result<Self, LoadError> {
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadError::new(format!(
                "the arrival rate must be a finite number above 0, not {rate}"
            )));
        }
        let gaps = Exp::new(rate).map_err(|e| LoadError::new(format!("rate {rate}: {e}")))?;
        Ok(Self {
            rng: StdRng::seed_from_u64(seed),
            gaps,
            at_s: 0.0,
        })
    }
}

impl Iterator for PoissonSchedule {
    /// The next arrival's offset from the start of the run.
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        self.at_s += self.gaps.sample(&mut self.rng);
        Duration::try_from_secs_f64(self.at_s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rate_within_two_percent_over_many_arrivals() {
        for (rate, seed) in [(10.0, 1), (250.0, 2), (20_000.0, 3)] {
            let n = 40_000;
            let last = PoissonSchedule::new(rate, seed)
                .unwrap()
                .nth(n - 1)
                .unwrap();
            let measured = n as f64 / last.as_secs_f64();
            assert!(
                (measured / rate - 1.0).abs() < 0.02,
                "rate {rate}: measured {measured}"
            );
        }
    }

    #[test]
    fn gaps_are_exponential_not_regular() {
        // For exponential gaps the standard deviation equals the mean; a
        // fixed-interval schedule would have none.
        let offsets: Vec<f64> = PoissonSchedule::new(100.0, 9)
            .unwrap()
            .take(20_001)
            .map(|d| d.as_secs_f64())
            .collect();
        let gaps: Vec<f64> = offsets.windows(2).map(|w| w[1] - w[0]).collect();
        let mean = gaps.iter().sum::<f64>() / gaps.len() as f64;
        let var = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / gaps.len() as f64;
        assert!(
            (var.sqrt() / mean - 1.0).abs() < 0.05,
            "cv {}",
            var.sqrt() / mean
        );
    }

    #[test]
    fn refuses_rates_that_are_not_positive_and_finite() {
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(PoissonSchedule::new(bad, 1).is_err(), "{bad}");
        }
    }

    proptest! {
        #[test]
        fn same_seed_same_schedule(seed in any::<u64>(), rate in 0.1f64..1e5) {
            let a: Vec<_> = PoissonSchedule::new(rate, seed).unwrap().take(64).collect();
            let b: Vec<_> = PoissonSchedule::new(rate, seed).unwrap().take(64).collect();
            prop_assert_eq!(&a, &b);
            prop_assert!(a.windows(2).all(|w| w[0] <= w[1]));
            let c: Vec<_> = PoissonSchedule::new(rate, seed.wrapping_add(1)).unwrap().take(64).collect();
            prop_assert_ne!(a, c);
        }
    }
}
