//! What a run measured, and the comparison table.

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// One point of a run's timeline (one per
/// [`SimConfig::timeline_interval`](crate::SimConfig::timeline_interval)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimelinePoint {
    /// End of the period.
    pub at: Duration,
    /// Measured arrivals per second over the period.
    pub arrival_rps: f64,
    /// The trace's rate in the middle of the period.
    pub trace_rps: f64,
    /// Replicas starting or ready at `at`.
    pub replicas: u32,
    /// Replicas ready at `at`.
    pub ready: u32,
    /// 99th percentile latency of the requests dispatched in the period.
    pub latency_p99: Option<Duration>,
}

/// The outcome of replaying one trace against one policy.
///
/// Accounting: every arrival is exactly one of `served` (dispatched in a
/// batch), `dropped` (queue full) or `unserved` (still queued when the
/// drain time ran out). A request *violates* the SLO if it was served over
/// the SLO, dropped or unserved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Name of the policy (autoscaler).
    pub policy: String,
    /// Name of the trace.
    pub trace: String,
    /// Trace length.
    pub duration: Duration,
    /// The latency objective.
    pub slo: Duration,
    /// Requests that arrived.
    pub arrivals: u64,
    /// Requests served.
    pub served: u64,
    /// Requests dropped because the queue was full.
    pub dropped: u64,
    /// Requests still queued at the end of the drain time.
    pub unserved: u64,
    /// Requests served with latency above the SLO.
    pub over_slo: u64,
    /// One-minute windows with at least one served request.
    pub windows: u64,
    /// Of those, windows whose p99 latency was above the SLO.
    pub windows_over_slo: u64,
    /// Replica-seconds (starting, ready or draining) over the trace.
    pub replica_seconds: f64,
    /// The [`Oracle`](crate::Oracle)'s replica-seconds on the same trace.
    pub oracle_replica_seconds: f64,
    /// Replicas started after time zero.
    pub cold_starts: u64,
    /// Times the scaling direction reversed (up after down or down after up).
    pub direction_changes: u64,
    /// Most replicas at any time.
    pub peak_replicas: u32,
    /// Median latency of all served requests.
    pub latency_p50: Option<Duration>,
    /// 99th percentile latency of all served requests.
    pub latency_p99: Option<Duration>,
    /// Load, replicas and p99 over time.
    pub timeline: Vec<TimelinePoint>,
}

impl Report {
    /// Requests that did not meet the SLO: over it, dropped or unserved.
    pub fn violating(&self) -> u64 {
        self.over_slo + self.dropped + self.unserved
    }

    /// [`violating`](Self::violating) as a fraction of arrivals.
    pub fn violating_fraction(&self) -> f64 {
        ratio(self.violating() as f64, self.arrivals as f64)
    }

    /// Fraction of one-minute windows whose p99 was above the SLO.
    pub fn windows_over_fraction(&self) -> f64 {
        ratio(self.windows_over_slo as f64, self.windows as f64)
    }

    /// Replica-seconds divided by the oracle's.
    pub fn oracle_ratio(&self) -> f64 {
        ratio(self.replica_seconds, self.oracle_replica_seconds)
    }

    /// Direction changes per hour of trace.
    pub fn direction_changes_per_hour(&self) -> f64 {
        ratio(
            self.direction_changes as f64 * 3600.0,
            self.duration.as_secs_f64(),
        )
    }
}

fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 {
        a / b
    } else {
        0.0
    }
}

/// Renders reports as a Markdown table, one row per report, in order.
pub fn comparison_table(reports: &[Report]) -> String {
    let mut out = String::new();
    out.push_str(
        "| trace | policy | requests | % over SLO | % min p99 > SLO | replica-s | vs oracle | cold starts | flips/h | dropped | p99 |\n",
    );
    out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
    for r in reports {
        let p99 = r
            .latency_p99
            .map_or_else(|| "-".to_owned(), |d| format!("{} ms", d.as_millis()));
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.2} | {:.1} | {:.0} | {:.2}x | {} | {:.1} | {} | {} |",
            r.trace,
            r.policy,
            r.arrivals,
            100.0 * r.violating_fraction(),
            100.0 * r.windows_over_fraction(),
            r.replica_seconds,
            r.oracle_ratio(),
            r.cold_starts,
            r.direction_changes_per_hour(),
            r.dropped,
            p99,
        );
    }
    out
}
