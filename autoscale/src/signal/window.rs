use std::collections::VecDeque;
use std::time::Duration;

use super::sample::{BatchCost, Counter, LoadSample, Signal};

#[derive(Debug, Clone, Copy)]
struct Entry {
    at: Duration,
    /// `at` in nanoseconds, and the interval since the previous sample (0 for
    /// the first sample ever): integer arithmetic keeps aggregation cheap.
    at_ns: u64,
    interval_ns: u64,
    sample: LoadSample,
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// A bounded, time-indexed history of [`LoadSample`]s with look-back aggregation.
///
/// Time is a [`Duration`] since an arbitrary epoch, so the same window works on
/// the tokio clock (the [`Autoscaler`](crate::Autoscaler) maps its
/// `tokio::time::Instant` to it) and in simulated time.
///
/// Each sample describes the interval since the previous sample: a mean over a
/// look-back `[now − lookback, now]` weights every sample inside it by the part
/// of its interval that falls inside the look-back (a time-weighted average; with
/// regular sampling it equals the plain mean, as Ray Serve's look-back average
/// does). The very first sample has no interval; when no sample in a look-back
/// has a weight, the plain mean is used. A look-back with no sample at all
/// yields `None`: the metric is *missing*, and policies then hold (never jump).
///
/// Memory is bounded: samples older than the [`horizon`](Window::horizon) are
/// dropped, and at most `capacity` samples are kept.
///
/// Several look-backs can be read from one window, for example Knative's 60 s
/// stable and 6 s panic windows:
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale::{LoadSample, Signal, Window};
///
/// let mut w = Window::new(Duration::from_secs(60));
/// for t in 0..60 {
///     let load = if t < 54 { 10.0 } else { 40.0 };
///     w.push(Duration::from_secs(t), LoadSample::ongoing(load));
/// }
/// let now = Duration::from_secs(59);
/// let stable = w.view(now, Duration::from_secs(60)).mean(Signal::Ongoing).unwrap();
/// let panic = w.view(now, Duration::from_secs(6)).mean(Signal::Ongoing).unwrap();
/// assert!(panic > 2.0 * stable);
/// ```
#[derive(Debug, Clone)]
pub struct Window {
    entries: VecDeque<Entry>,
    horizon: Duration,
    capacity: usize,
    rejected: u64,
}

impl Window {
    /// Default bound on the number of samples kept.
    pub const DEFAULT_CAPACITY: usize = 4096;

    /// A window keeping samples for `horizon`, at most [`Window::DEFAULT_CAPACITY`] of them.
    pub fn new(horizon: Duration) -> Self {
        Self::with_capacity(horizon, Self::DEFAULT_CAPACITY)
    }

    /// A window keeping samples for `horizon`, at most `capacity` (at least 2) of them.
    pub fn with_capacity(horizon: Duration, capacity: usize) -> Self {
        let capacity = capacity.max(2);
        Self {
            entries: VecDeque::with_capacity(capacity.min(256)),
            horizon,
            capacity,
            rejected: 0,
        }
    }

    /// How far back samples are kept.
    pub fn horizon(&self) -> Duration {
        self.horizon
    }

    /// Number of samples held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// `true` when no sample is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Samples rejected so far (invalid values or time going backwards).
    pub fn rejected(&self) -> u64 {
        self.rejected
    }

    /// Removes every sample.
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// Records `sample` taken at `now`. Returns `false` (and counts a rejection)
    /// when the sample is invalid (see [`LoadSample::is_valid`]) or older than
    /// the newest sample. A sample at the same time as the newest one is merged
    /// into it: counters add up, gauges and latencies take the new values.
    pub fn push(&mut self, now: Duration, sample: LoadSample) -> bool {
        if !sample.is_valid() {
            self.rejected += 1;
            return false;
        }
        if let Some(last) = self.entries.back_mut() {
            if now < last.at {
                self.rejected += 1;
                return false;
            }
            if now == last.at {
                let prev = last.sample;
                let mut merged = sample;
                merged.arrivals = merged.arrivals.saturating_add(prev.arrivals);
                merged.completions = merged.completions.saturating_add(prev.completions);
                merged.batches = merged.batches.saturating_add(prev.batches);
                merged.batch_items = merged.batch_items.saturating_add(prev.batch_items);
                merged.batch_busy = merged.batch_busy.saturating_add(prev.batch_busy);
                merged.latency_p50 = merged.latency_p50.or(prev.latency_p50);
                merged.latency_p90 = merged.latency_p90.or(prev.latency_p90);
                merged.latency_p99 = merged.latency_p99.or(prev.latency_p99);
                merged.queue_wait = merged.queue_wait.or(prev.queue_wait);
                last.sample = merged;
                return true;
            }
        }
        let at_ns = nanos(now);
        let interval_ns = self
            .entries
            .back()
            .map_or(0, |last| at_ns.saturating_sub(last.at_ns));
        self.entries.push_back(Entry {
            at: now,
            at_ns,
            interval_ns,
            sample,
        });
        self.prune(now);
        true
    }

    /// Drops samples that can no longer fall into any look-back up to the horizon.
    /// One sample older than the horizon is kept: it marks where the next one's interval starts.
    fn prune(&mut self, now: Duration) {
        let start = now.saturating_sub(self.horizon);
        while self.entries.len() >= 2 && self.entries[1].at <= start {
            self.entries.pop_front();
        }
        while self.entries.len() > self.capacity {
            self.entries.pop_front();
        }
    }

    /// The newest sample and its time.
    pub fn latest(&self) -> Option<(Duration, &LoadSample)> {
        self.entries.back().map(|e| (e.at, &e.sample))
    }

    /// A view of the samples in `(now − lookback, now]`.
    pub fn view(&self, now: Duration, lookback: Duration) -> WindowView<'_> {
        WindowView {
            window: self,
            now,
            start: now.saturating_sub(lookback),
            lookback,
        }
    }

    /// Time-weighted mean of `signal` over the look-back; `None` when missing.
    pub fn mean(&self, now: Duration, lookback: Duration, signal: Signal) -> Option<f64> {
        self.view(now, lookback).mean(signal)
    }

    /// Largest value of `signal` in the look-back; `None` when missing.
    pub fn max(&self, now: Duration, lookback: Duration, signal: Signal) -> Option<f64> {
        self.view(now, lookback).max(signal)
    }

    /// Time-weighted `q`-quantile (`q` in `[0, 1]`) of `signal` over the look-back.
    pub fn percentile(
        &self,
        now: Duration,
        lookback: Duration,
        signal: Signal,
        q: f64,
    ) -> Option<f64> {
        self.view(now, lookback).percentile(signal, q)
    }

    /// Per-second rate of `counter` over the look-back; `None` when missing.
    pub fn rate(&self, now: Duration, lookback: Duration, counter: Counter) -> Option<f64> {
        self.view(now, lookback).rate(counter)
    }

    /// Batch cost curve fitted over the look-back; see [`WindowView::batch_cost`].
    pub fn batch_cost(&self, now: Duration, lookback: Duration) -> Option<BatchCost> {
        self.view(now, lookback).batch_cost()
    }
}

/// A look-back `(now − lookback, now]` over a [`Window`], made by [`Window::view`].
#[derive(Debug, Clone, Copy)]
pub struct WindowView<'a> {
    window: &'a Window,
    now: Duration,
    start: Duration,
    lookback: Duration,
}

impl<'a> WindowView<'a> {
    /// The end of the look-back.
    pub fn now(&self) -> Duration {
        self.now
    }

    /// The length of the look-back.
    pub fn lookback(&self) -> Duration {
        self.lookback
    }

    /// Index range of the samples in the look-back. At the very start of
    /// time (`start == 0`) a sample at zero is included.
    fn bounds(&self) -> (usize, usize) {
        let entries = &self.window.entries;
        let end = entries.partition_point(|e| e.at <= self.now);
        let begin = if self.start.is_zero() {
            0
        } else {
            entries.partition_point(|e| e.at <= self.start)
        };
        (begin.min(end), end)
    }

    /// Samples in the look-back, oldest first, each with the part of its
    /// interval that falls in the look-back in seconds (zero for the first
    /// sample ever) and its full interval in nanoseconds (zero for the first
    /// sample ever).
    fn weighted(&self) -> impl Iterator<Item = (f64, u64, &'a LoadSample)> + 'a {
        let entries = &self.window.entries;
        let (begin, end) = self.bounds();
        let start_ns = nanos(self.start);
        entries.range(begin..end).map(move |e| {
            let weight = e.interval_ns.min(e.at_ns.saturating_sub(start_ns));
            (weight as f64 * 1e-9, e.interval_ns, &e.sample)
        })
    }

    /// The samples in the look-back with their times, oldest first.
    pub fn samples(&self) -> impl Iterator<Item = (Duration, &'a LoadSample)> + 'a {
        let (begin, end) = self.bounds();
        self.window
            .entries
            .range(begin..end)
            .map(|e| (e.at, &e.sample))
    }

    /// Number of samples in the look-back.
    pub fn count(&self) -> usize {
        let (begin, end) = self.bounds();
        end - begin
    }

    /// The newest sample in the look-back.
    pub fn latest(&self) -> Option<&'a LoadSample> {
        let (begin, end) = self.bounds();
        (end > begin).then(|| &self.window.entries[end - 1].sample)
    }

    /// Time-weighted mean of `signal`; `None` when no sample in the look-back carries it.
    pub fn mean(&self, signal: Signal) -> Option<f64> {
        let (mut wsum, mut wv, mut n, mut sum) = (0.0, 0.0, 0u32, 0.0);
        for (w, _, s) in self.weighted() {
            if let Some(v) = signal.value(s) {
                wsum += w;
                wv += w * v;
                n += 1;
                sum += v;
            }
        }
        if n == 0 {
            None
        } else if wsum > 0.0 {
            Some(wv / wsum)
        } else {
            Some(sum / f64::from(n))
        }
    }

    /// Largest value of `signal`; `None` when no sample in the look-back carries it.
    pub fn max(&self, signal: Signal) -> Option<f64> {
        self.weighted()
            .filter_map(|(_, _, s)| signal.value(s))
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.max(v)))
            })
    }

    /// Smallest value of `signal`; `None` when no sample in the look-back carries it.
    pub fn min(&self, signal: Signal) -> Option<f64> {
        self.weighted()
            .filter_map(|(_, _, s)| signal.value(s))
            .fold(None, |acc: Option<f64>, v| {
                Some(acc.map_or(v, |a| a.min(v)))
            })
    }

    /// Mean batch size (items per batch) over the look-back; `None` when no
    /// batch was reported.
    pub fn mean_batch_size(&self) -> Option<f64> {
        let (mut items, mut batches) = (0u64, 0u64);
        for (_, _, s) in self.weighted() {
            items = items.saturating_add(s.batch_items);
            batches = batches.saturating_add(s.batches);
        }
        (batches > 0).then(|| items as f64 / batches as f64)
    }

    /// Time-weighted `q`-quantile of `signal` (`q` clamped to `[0, 1]`; NaN is treated as 1).
    /// Allocates a buffer of the look-back's samples.
    pub fn percentile(&self, signal: Signal, q: f64) -> Option<f64> {
        let q = if q.is_nan() { 1.0 } else { q.clamp(0.0, 1.0) };
        let mut values: Vec<(f64, f64)> = self
            .weighted()
            .filter_map(|(w, _, s)| signal.value(s).map(|v| (v, w)))
            .collect();
        if values.is_empty() {
            return None;
        }
        let total: f64 = values.iter().map(|(_, w)| w).sum();
        if total <= 0.0 {
            values.iter_mut().for_each(|(_, w)| *w = 1.0);
        }
        let total: f64 = values.iter().map(|(_, w)| w).sum();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        let target = q * total;
        let mut acc = 0.0;
        for &(v, w) in &values {
            acc += w;
            if acc >= target {
                return Some(v);
            }
        }
        values.last().map(|(v, _)| *v)
    }

    /// Per-second rate of `counter`: the counts of the samples in the look-back
    /// divided by the intervals they cover. `None` when the look-back holds no
    /// sample with a known interval.
    pub fn rate(&self, counter: Counter) -> Option<f64> {
        let (mut count, mut span_ns) = (0u64, 0u64);
        for (_, interval_ns, s) in self.weighted() {
            if interval_ns > 0 {
                count = count.saturating_add(counter.value(s));
                span_ns = span_ns.saturating_add(interval_ns);
            }
        }
        if span_ns == 0 {
            None
        } else {
            Some(count as f64 / (span_ns as f64 * 1e-9))
        }
    }

    /// Fits `cost(n) = fixed + per_item · n` to the batches in the look-back
    /// (weighted least squares over each sample's mean batch size and mean
    /// batch time). With too little spread in batch sizes to separate the two
    /// terms (a coefficient of variation under 10 %), or with a negative
    /// term, returns the proportional curve through the mean point
    /// (`fixed = 0`), which never overstates throughput at larger batches.
    /// `None` when no batch was reported.
    pub fn batch_cost(&self) -> Option<BatchCost> {
        self.fit_batches().map(|(fit, _)| fit)
    }

    /// Like [`batch_cost`](Self::batch_cost), but only a genuine two-term
    /// fit: `None` when the batch sizes do not spread enough to separate
    /// `fixed` from `per_item` (the caller may prefer a configured curve).
    pub fn batch_cost_fit(&self) -> Option<BatchCost> {
        self.fit_batches()
            .and_then(|(fit, two_term)| two_term.then_some(fit))
    }

    /// The fit and whether it is a genuine two-term fit.
    fn fit_batches(&self) -> Option<(BatchCost, bool)> {
        let (mut sw, mut sx, mut sy, mut sxx, mut sxy) = (0.0, 0.0, 0.0, 0.0, 0.0);
        let (begin, end) = self.bounds();
        for e in self.window.entries.range(begin..end) {
            let s = &e.sample;
            if s.batches == 0 || s.batch_items == 0 {
                continue;
            }
            // Weight w = batches, x = items / batches, y = busy / batches:
            // w·x = items, w·y = busy, w·x² = items · x, w·x·y = busy · x.
            let items = s.batch_items as f64;
            let busy = s.batch_busy.as_secs_f64();
            let x = items / s.batches as f64;
            sw += s.batches as f64;
            sx += items;
            sy += busy;
            sxx += items * x;
            sxy += busy * x;
        }
        if sw <= 0.0 {
            return None;
        }
        let (mx, my) = (sx / sw, sy / sw);
        let var = sxx / sw - mx * mx;
        // Trust the two-term fit only with a real spread of batch sizes (a
        // coefficient of variation of at least 10 %); noise on a narrow spread
        // would make the slope arbitrary.
        let fitted = if var >= 0.01 * mx * mx && var > 0.0 {
            let b = (sxy / sw - mx * my) / var;
            let a = my - b * mx;
            (a >= 0.0 && b >= 0.0).then_some((a, b))
        } else {
            None
        };
        let two_term = fitted.is_some();
        let (a, b) = fitted.unwrap_or((0.0, if mx > 0.0 { my / mx } else { 0.0 }));
        Some((
            BatchCost::new(
                Duration::try_from_secs_f64(a).ok()?,
                Duration::try_from_secs_f64(b).ok()?,
            ),
            two_term,
        ))
    }

    /// How many replicas reported in the newest sample of the look-back, if it says.
    pub fn replicas_reporting(&self) -> Option<u32> {
        self.latest().and_then(|s| s.replicas_reporting)
    }
}
