//! A rate sweep: the same open loop at several offered rates, one point
//! each (throughput, p50, p99, errors), for [`crate::plot::sweep_plot`].

use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use crate::{run_target, LoadConfig, LoadError, Mode, Summary, Target};

/// One rate of a sweep.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SweepPoint {
    /// The target arrival rate, per second.
    pub offered_per_s: f64,
    /// What the run at that rate measured.
    pub summary: Summary,
}

/// Parses `10,20,40` into rates; each must be finite and above zero.
pub fn parse_rates(list: &str) -> Result<Vec<f64>, LoadError> {
    let rates = list
        .split(',')
        .map(|r| match r.trim().parse::<f64>() {
            Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
            _ => Err(LoadError::new(format!(
                "rate {r:?}: expected a number above 0"
            ))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    if rates.is_empty() {
        return Err(LoadError::new("no rates"));
    }
    Ok(rates)
}

/// Runs `base` as an open loop at each rate in turn (keeping its
/// `max_outstanding` and seed when it is one already), after `warmup` at
/// that rate, and calls `each` with every point as it is measured.
pub async fn sweep(
    target: Arc<dyn Target>,
    base: &LoadConfig,
    rates: &[f64],
    warmup: Duration,
    mut each: impl FnMut(&SweepPoint),
) -> Result<Vec<SweepPoint>, LoadError> {
    let (max_outstanding, seed) = match base.mode() {
        Mode::Open {
            max_outstanding,
            seed,
            ..
        } => (max_outstanding, seed),
        Mode::Closed { .. } => (1024, 1),
    };
    let mut points = Vec::with_capacity(rates.len());
    for &rate in rates {
        let config = base
            .clone()
            .open_loop(rate)
            .max_outstanding(max_outstanding)
            .seed(seed);
        if !warmup.is_zero() {
            let warm = config.clone().duration(warmup).progress(false);
            run_target(Arc::clone(&target), &warm).await?;
        }
        let summary = run_target(Arc::clone(&target), &config).await?.summary();
        let point = SweepPoint {
            offered_per_s: rate,
            summary,
        };
        each(&point);
        points.push(point);
    }
    Ok(points)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rate_lists() {
        assert_eq!(parse_rates("10, 20,40.5").unwrap(), vec![10.0, 20.0, 40.5]);
        for bad in ["", "10,,20", "0", "-5", "x", "inf"] {
            assert!(parse_rates(bad).is_err(), "{bad:?}");
        }
    }
}
