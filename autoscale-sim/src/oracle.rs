//! The offline oracle: the fewest replicas that meet the SLO on a known
//! trace, provisioned one cold start ahead.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::SimConfig;
use crate::trace::Trace;

/// An offline plan for a trace that knows the future.
///
/// For each minute it takes the peak rate of the trace and the fewest
/// replicas whose SLO-feasible capacity
/// ([`ReplicaModel::capacity_rps`](crate::ReplicaModel::capacity_rps))
/// covers it (at least one while there is load), and it starts each replica
/// exactly one cold start before the minute that needs it, paying for the
/// cold start too. It ignores Poisson bursts inside a minute and runs
/// replicas at full SLO-feasible utilisation, so it is a lower bound that
/// no online policy reaches: a policy's replica-seconds divided by the
/// oracle's says how much it overprovisions (and a ratio below 1 means it
/// underprovisions, which shows up as SLO violations).
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale_sim::{Oracle, SimConfig, Trace};
///
/// let config = SimConfig::default();
/// let per_replica = config.replica.capacity_rps(config.slo);
/// let trace = Trace::constant(per_replica * 2.5, Duration::from_secs(600)).unwrap();
/// let oracle = Oracle::plan(&trace, &config);
/// assert!(oracle.replicas_per_minute().iter().all(|&n| n == 3));
/// assert_eq!(oracle.replica_seconds(), 3.0 * 600.0);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Oracle {
    per_minute: Vec<u32>,
    replica_seconds: f64,
}

const MINUTE: f64 = 60.0;

impl Oracle {
    /// Plans `trace` with the replica model and SLO of `config`.
    pub fn plan(trace: &Trace, config: &SimConfig) -> Self {
        let capacity = config.replica.capacity_rps(config.slo);
        let end = trace.duration().as_secs_f64();
        let minutes = (end / MINUTE).ceil() as usize;
        let step = trace.step_len().as_secs_f64();
        let rates = trace.rates();

        let mut per_minute = vec![0u32; minutes];
        for (k, &rate) in rates.iter().enumerate() {
            let (lo, hi) = (k as f64 * step, (k as f64 + 1.0) * step);
            let first = (lo / MINUTE).floor() as usize;
            let last = (((hi / MINUTE).ceil() as usize).max(first + 1)).min(minutes);
            let need = replicas_for(rate, capacity);
            for slot in &mut per_minute[first.min(minutes)..last] {
                *slot = (*slot).max(need);
            }
        }

        let cold = config.replica.cold_start.as_secs_f64();
        let whole = (cold / MINUTE).floor() as usize;
        let rest = cold - whole as f64 * MINUTE;
        let peak = |from: usize, to: usize| -> u32 {
            per_minute
                .get(from..=to.min(minutes.saturating_sub(1)))
                .map_or(0, |s| s.iter().copied().max().unwrap_or(0))
        };
        let mut replica_seconds = 0.0;
        for m in 0..minutes {
            let start = m as f64 * MINUTE;
            let stop = (start + MINUTE).min(end);
            // During [start, start + 60 - rest) the replicas starting now
            // serve minute m + whole; afterwards minute m + whole + 1.
            let split = (start + MINUTE - rest).min(stop);
            replica_seconds += f64::from(peak(m, m + whole)) * (split - start).max(0.0);
            replica_seconds += f64::from(peak(m, m + whole + 1)) * (stop - split).max(0.0);
        }
        Self {
            per_minute,
            replica_seconds,
        }
    }

    /// Replicas the oracle serves each minute with.
    pub fn replicas_per_minute(&self) -> &[u32] {
        &self.per_minute
    }

    /// Replica-seconds over the trace, cold starts included.
    pub fn replica_seconds(&self) -> f64 {
        self.replica_seconds
    }

    /// Replicas serving at time `t`.
    pub fn replicas_at(&self, t: Duration) -> u32 {
        let m = (t.as_secs_f64() / MINUTE) as usize;
        self.per_minute.get(m).copied().unwrap_or(0)
    }
}

fn replicas_for(rate: f64, capacity: f64) -> u32 {
    if rate <= 0.0 {
        0
    } else {
        // The epsilon keeps an exact multiple of capacity from rounding up.
        ((rate / capacity - 1e-9).ceil() as u32).max(1)
    }
}
