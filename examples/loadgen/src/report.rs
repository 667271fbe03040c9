//! What a run measured: per-client tallies merged into a report, and its
//! flat summary.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::config::Mode;

/// Largest latency the histograms record (60 s, in µs); longer ones are clamped.
const MAX_LATENCY_US: u64 = 60_000_000;
/// The error kind of an open-loop arrival refused because
/// `max_outstanding` requests were already in flight.
pub const DROPPED: &str = "dropped";

/// What a run measured.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// Requests answered with a 2xx status.
    pub ok: u64,
    /// Failed requests by kind: `"http 503"`, `"timeout"`, `"connect"`,
    /// [`DROPPED`], ...
    pub errors: BTreeMap<String, u64>,
    /// Wall time from the start to the last answer.
    pub elapsed: Duration,
    /// Latency of successful requests, in microseconds (from the intended
    /// send time in an open loop).
    pub latency_us: Histogram<u64>,
    /// Latency of failed requests by kind, in microseconds, measured as
    /// [`Self::latency_us`] is: how fast a server says no (`"http 503"`)
    /// against how long it lets a caller wait (`"timeout"`). Dropped
    /// arrivals, never sent, have none.
    pub error_latency_us: BTreeMap<String, Histogram<u64>>,
    /// Successful answers in each whole second of the run (index 0: the
    /// first second), by when they were answered: throughput over time,
    /// e.g. how soon it recovers after an overload.
    pub ok_per_sec: Vec<u64>,
    /// The mode the run used.
    pub mode: Mode,
    /// Requests the schedule called for (open loop; sent or dropped).
    pub scheduled: u64,
}

/// The figures of a [`LoadReport`], flat, for JSON output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Summary {
    /// `closed` or `open`.
    pub mode: &'static str,
    /// Closed loop: number of clients; open loop: most requests in flight.
    pub concurrency: usize,
    /// Open loop: the target arrival rate per second.
    pub offered_per_s: Option<f64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (including dropped arrivals).
    pub errors: u64,
    /// Failed requests by kind.
    pub errors_by_kind: BTreeMap<String, u64>,
    /// Run time in seconds.
    pub elapsed_s: f64,
    /// Successful items per second.
    pub items_per_s: f64,
    /// Latency percentiles of successful requests, milliseconds.
    pub p50_ms: f64,
    /// 90th percentile latency, milliseconds.
    pub p90_ms: f64,
    /// 99th percentile latency, milliseconds.
    pub p99_ms: f64,
    /// Largest latency, milliseconds.
    pub max_ms: f64,
}

impl LoadReport {
    pub(crate) fn empty(mode: Mode) -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            elapsed: Duration::ZERO,
            latency_us: new_histogram(),
            error_latency_us: BTreeMap::new(),
            ok_per_sec: Vec::new(),
            mode,
            scheduled: 0,
        }
    }

    /// Total failed requests.
    pub fn error_count(&self) -> u64 {
        self.errors.values().sum()
    }

    /// Successful requests per second of wall time.
    pub fn items_per_sec(&self) -> f64 {
        let secs = self.elapsed.as_secs_f64();
        if secs > 0.0 {
            self.ok as f64 / secs
        } else {
            0.0
        }
    }

    /// Latency at quantile `q` (0..=1) of successful requests, in ms.
    pub fn latency_ms(&self, q: f64) -> f64 {
        if self.latency_us.is_empty() {
            return 0.0;
        }
        self.latency_us.value_at_quantile(q) as f64 / 1000.0
    }

    /// Latency at quantile `q` (0..=1) of the requests that failed as
    /// `kind`, in ms (0 when none did).
    pub fn error_latency_ms(&self, kind: &str, q: f64) -> f64 {
        match self.error_latency_us.get(kind) {
            Some(h) if !h.is_empty() => h.value_at_quantile(q) as f64 / 1000.0,
            _ => 0.0,
        }
    }

    /// Successful requests whose latency was at least `ms` milliseconds.
    pub fn count_at_least_ms(&self, ms: f64) -> u64 {
        let us = (ms * 1000.0) as u64;
        self.latency_us
            .iter_recorded()
            .filter(|v| v.value_iterated_to() >= us)
            .map(|v| v.count_at_value())
            .sum()
    }

    /// The report's figures, flat.
    pub fn summary(&self) -> Summary {
        let (mode, concurrency, offered_per_s) = match self.mode {
            Mode::Closed { concurrency } => ("closed", concurrency, None),
            Mode::Open {
                rate,
                max_outstanding,
                ..
            } => ("open", max_outstanding, Some(rate)),
        };
        Summary {
            mode,
            concurrency,
            offered_per_s,
            ok: self.ok,
            errors: self.error_count(),
            errors_by_kind: self.errors.clone(),
            elapsed_s: self.elapsed.as_secs_f64(),
            items_per_s: self.items_per_sec(),
            p50_ms: self.latency_ms(0.50),
            p90_ms: self.latency_ms(0.90),
            p99_ms: self.latency_ms(0.99),
            max_ms: if self.latency_us.is_empty() {
                0.0
            } else {
                self.latency_us.max() as f64 / 1000.0
            },
        }
    }

    pub(crate) fn merge(&mut self, other: Tally) {
        self.ok += other.ok;
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms share bounds");
        for (kind, h) in other.error_latency_us {
            self.error_latency_us
                .entry(kind)
                .or_insert_with(new_histogram)
                .add(&h)
                .expect("histograms share bounds");
        }
        if self.ok_per_sec.len() < other.ok_per_sec.len() {
            self.ok_per_sec.resize(other.ok_per_sec.len(), 0);
        }
        for (sum, n) in self.ok_per_sec.iter_mut().zip(other.ok_per_sec) {
            *sum += n;
        }
    }
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.offered_per_s {
            Some(rate) => write!(f, "offered {rate:>8.1}/s")?,
            None => write!(f, "clients {:>4}", self.concurrency)?,
        }
        write!(
            f,
            "  ok {:>7}  errors {:>5}  {:>9.1} items/s  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms",
            self.ok, self.errors, self.items_per_s, self.p50_ms, self.p90_ms, self.p99_ms
        )?;
        for (kind, n) in &self.errors_by_kind {
            write!(f, "  [{kind}: {n}]")?;
        }
        Ok(())
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

/// Counters the progress bar reads while a run goes on.
#[derive(Debug, Default)]
pub(crate) struct Live {
    pub(crate) ok: AtomicU64,
    pub(crate) errors: AtomicU64,
}

/// What one client (or the open loop) saw; merged into a [`LoadReport`].
pub(crate) struct Tally {
    pub(crate) ok: u64,
    pub(crate) errors: BTreeMap<String, u64>,
    pub(crate) latency_us: Histogram<u64>,
    pub(crate) error_latency_us: BTreeMap<String, Histogram<u64>>,
    pub(crate) ok_per_sec: Vec<u64>,
}

impl Tally {
    pub(crate) fn new() -> Self {
        Self {
            ok: 0,
            errors: BTreeMap::new(),
            latency_us: new_histogram(),
            error_latency_us: BTreeMap::new(),
            ok_per_sec: Vec::new(),
        }
    }

    /// One answer: `latency` long, given `answered` after the run's start.
    pub(crate) fn record(
        &mut self,
        result: Result<(), String>,
        latency: Duration,
        answered: Duration,
        live: &Live,
    ) {
        let us = u64::try_from(latency.as_micros())
            .unwrap_or(u64::MAX)
            .clamp(1, MAX_LATENCY_US);
        match result {
            Ok(()) => {
                self.ok += 1;
                live.ok.fetch_add(1, Ordering::Relaxed);
                self.latency_us.saturating_record(us);
                let sec = usize::try_from(answered.as_secs()).unwrap_or(usize::MAX);
                // A bound on the timeline: a day of seconds.
                if sec < 86_400 {
                    if self.ok_per_sec.len() <= sec {
                        self.ok_per_sec.resize(sec + 1, 0);
                    }
                    self.ok_per_sec[sec] += 1;
                }
            }
            Err(kind) => {
                live.errors.fetch_add(1, Ordering::Relaxed);
                self.error_latency_us
                    .entry(kind.clone())
                    .or_insert_with(new_histogram)
                    .saturating_record(us);
                *self.errors.entry(kind).or_default() += 1;
            }
        }
    }

    /// An open-loop arrival not sent: counted, with no latency.
    pub(crate) fn dropped(&mut self, live: &Live) {
        live.errors.fetch_add(1, Ordering::Relaxed);
        *self.errors.entry(DROPPED.to_owned()).or_default() += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_figures() {
        let mut report = LoadReport::empty(Mode::Closed { concurrency: 4 });
        let mut tally = Tally::new();
        tally.ok = 100;
        tally.errors.insert("http 503".to_owned(), 3);
        for us in 1..=100 {
            tally.latency_us.record(us * 1000).unwrap();
        }
        report.merge(tally);
        report.elapsed = Duration::from_secs(2);
        let s = report.summary();
        assert_eq!(s.ok, 100);
        assert_eq!(s.errors, 3);
        assert!((s.items_per_s - 50.0).abs() < 1e-9);
        assert!((s.p50_ms - 50.0).abs() < 0.1, "{}", s.p50_ms);
        assert!((s.p99_ms - 99.0).abs() < 0.1, "{}", s.p99_ms);
        assert!(s.to_string().contains("http 503: 3"));
        assert_eq!(report.count_at_least_ms(90.0), 11);
        assert_eq!(s.mode, "closed");
        assert_eq!(s.offered_per_s, None);
    }

    #[test]
    fn failures_keep_their_latency_by_kind_and_answers_their_second() {
        let live = Live::default();
        let ms = Duration::from_millis;
        let mut a = Tally::new();
        a.record(Ok(()), ms(20), ms(300), &live);
        a.record(Ok(()), ms(20), ms(2_100), &live);
        a.record(Err("http 503".into()), ms(1), ms(2_200), &live);
        a.dropped(&live);
        let mut b = Tally::new();
        b.record(Ok(()), ms(30), ms(900), &live);
        b.record(Err("http 503".into()), ms(3), ms(950), &live);
        b.record(Err("timeout".into()), ms(30_000), ms(31_000), &live);
        let mut report = LoadReport::empty(Mode::Closed { concurrency: 2 });
        report.merge(a);
        report.merge(b);
        assert_eq!(report.ok, 3);
        assert_eq!(report.ok_per_sec, vec![2, 0, 1]);
        assert_eq!(report.errors["http 503"], 2);
        assert_eq!(report.errors[DROPPED], 1);
        assert_eq!(report.error_latency_us["http 503"].len(), 2);
        assert!(!report.error_latency_us.contains_key(DROPPED));
        assert!((report.error_latency_ms("http 503", 1.0) - 3.0).abs() < 0.01);
        assert!((report.error_latency_ms("timeout", 0.5) - 30_000.0).abs() < 30.0);
        assert_eq!(report.error_latency_ms("http 504", 0.5), 0.0);
        assert_eq!(live.ok.load(Ordering::Relaxed), 3);
        assert_eq!(live.errors.load(Ordering::Relaxed), 4);
    }
}
