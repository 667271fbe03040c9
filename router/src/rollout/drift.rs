//! Prediction drift: does the canary answer like the stable version on the
//! same traffic?
//!
//! Error rate and latency catch a canary that fails or is slow; they do not
//! catch one that answers quickly and wrongly (other weights, a broken
//! preprocessing step). A [`DriftMonitor`] collects pairs of outputs — the
//! stable's and the canary's for the same request — and the rollout judges
//! them beside error rate and latency:
//!
//! * top-1 agreement for classifiers (share of pairs whose arg-max class is
//!   the same),
//! * mean cosine similarity for encoders (embeddings),
//! * a two-sample test on score distributions (e.g. the top class's
//!   probability): the Kolmogorov–Smirnov statistic `D` ([`ks_statistic`])
//!   and the population stability index ([`psi`]).
//!
//! Each check is on when its threshold is set in [`DriftConfig`]. No verdict
//! is given below `min_pairs` samples for every enabled check: the rollout
//! waits. A failed check counts against the rollout's `failure_limit` like
//! an error-rate failure, and its figure is in the event's reason, e.g.
//! `drift: top-1 agreement 0.62 < 0.95 over 400 pairs`.
//!
//! Pairs come from a [`Shadow`](crate::Shadow) (mirror the canary's
//! requests to the stable version, or the stable's to the canary) through
//! [`DriftCompare`], or from any code that has both outputs through
//! [`DriftMonitor::record`]. Outputs are read through the [`Prediction`]
//! trait; [`Logits`], [`Embedding`] and [`Score`] wrap plain vectors.
//!
//! # Example
//!
//! ```
//! use convoy_router::rollout::drift::{DriftConfig, DriftMonitor, Logits};
//!
//! # fn main() -> Result<(), convoy_router::ConfigError> {
//! let drift = DriftMonitor::new(DriftConfig {
//!     min_pairs: 2,
//!     min_top1_agreement: Some(0.95),
//!     ..DriftConfig::default()
//! })?;
//! drift.record(&Logits(vec![0.1, 2.0, 0.3]), &Logits(vec![0.2, 1.5, 0.1]));
//! drift.record(&Logits(vec![3.0, 0.0, 0.0]), &Logits(vec![0.0, 0.0, 3.0]));
//! let report = drift.report();
//! assert_eq!(report.pairs, 2);
//! assert_eq!(report.top1_agreement, Some(0.5));
//! # Ok(())
//! # }
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};
use crate::shadow::{Compare, ShadowError};

/// What the drift check reads from one model output. Every method is
/// optional: a classifier gives `top1` (and usually `score`), an encoder
/// gives `embedding`.
pub trait Prediction {
    /// Index of the predicted class.
    fn top1(&self) -> Option<usize> {
        None
    }

    /// The output embedding.
    fn embedding(&self) -> Option<&[f32]> {
        None
    }

    /// A scalar score whose distribution is compared (e.g. the top class's
    /// probability, a regression output). Non-finite scores are ignored.
    fn score(&self) -> Option<f64> {
        None
    }
}

impl<P: Prediction + ?Sized> Prediction for &P {
    fn top1(&self) -> Option<usize> {
        (**self).top1()
    }

    fn embedding(&self) -> Option<&[f32]> {
        (**self).embedding()
    }

    fn score(&self) -> Option<f64> {
        (**self).score()
    }
}

/// Class logits (or probabilities): `top1` is the arg-max, `score` the
/// softmax probability of that class. NaN logits never win the arg-max.
#[derive(Clone, Debug, PartialEq)]
pub struct Logits<T = Vec<f32>>(pub T);

impl<T: AsRef<[f32]>> Prediction for Logits<T> {
    fn top1(&self) -> Option<usize> {
        let mut best: Option<(usize, f32)> = None;
        for (i, &x) in self.0.as_ref().iter().enumerate() {
            if !x.is_nan() && best.is_none_or(|(_, b)| x > b) {
                best = Some((i, x));
            }
        }
        best.map(|(i, _)| i)
    }

    fn score(&self) -> Option<f64> {
        let logits = self.0.as_ref();
        let max = f64::from(logits[self.top1()?]);
        let sum: f64 = logits
            .iter()
            .filter(|x| !x.is_nan())
            .map(|&x| (f64::from(x) - max).exp())
            .sum();
        Some(1.0 / sum)
    }
}

/// An embedding, compared by cosine similarity.
#[derive(Clone, Debug, PartialEq)]
pub struct Embedding<T = Vec<f32>>(pub T);

impl<T: AsRef<[f32]>> Prediction for Embedding<T> {
    fn embedding(&self) -> Option<&[f32]> {
        Some(self.0.as_ref())
    }
}

/// A scalar score, compared as a distribution.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Score(pub f64);

impl Prediction for Score {
    fn score(&self) -> Option<f64> {
        Some(self.0)
    }
}

/// Thresholds of the drift check. A check is on when its threshold is set;
/// at least one must be.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct DriftConfig {
    /// Samples each enabled check needs in the analysis window before it
    /// gives a verdict (pairs for agreement and cosine, scores per side for
    /// the distribution tests).
    pub min_pairs: u64,
    /// Lowest acceptable share of pairs with the same top-1 class, `0..=1`.
    pub min_top1_agreement: Option<f64>,
    /// Lowest acceptable mean cosine similarity of embeddings, `-1..=1`.
    /// A pair whose embeddings differ in length or are all zero counts as 0.
    pub min_mean_cosine: Option<f64>,
    /// Highest acceptable Kolmogorov–Smirnov statistic `D` between the
    /// stable's and the canary's scores, `0..=1`.
    pub max_ks: Option<f64>,
    /// Highest acceptable population stability index of the canary's scores
    /// against the stable's (≥ 0; 0.1 is commonly read as a small shift,
    /// 0.25 as a large one).
    pub max_psi: Option<f64>,
    /// Bins of the PSI, cut at the stable scores' quantiles, `2..=1000`.
    pub psi_bins: usize,
    /// Scores kept per side for the distribution tests (the latest ones);
    /// bounds memory. At least `min_pairs`, at most 1,000,000.
    pub max_scores: usize,
}

impl Default for DriftConfig {
    /// A classifier check: top-1 agreement ≥ 0.95 and score PSI ≤ 0.2 over
    /// at least 200 pairs.
    fn default() -> Self {
        Self {
            min_pairs: 200,
            min_top1_agreement: Some(0.95),
            min_mean_cosine: None,
            max_ks: None,
            max_psi: Some(0.2),
            psi_bins: 10,
            max_scores: 10_000,
        }
    }
}

impl DriftConfig {
    /// An encoder check: mean embedding cosine ≥ 0.99 over at least 200 pairs.
    pub fn encoder() -> Self {
        Self {
            min_top1_agreement: None,
            min_mean_cosine: Some(0.99),
            max_psi: None,
            ..Self::default()
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let range = |msg: String| Err(ConfigError::new(ConfigErrorKind::OutOfRange, msg));
        let checks = [
            ("min_top1_agreement", self.min_top1_agreement, 0.0, 1.0),
            ("min_mean_cosine", self.min_mean_cosine, -1.0, 1.0),
            ("max_ks", self.max_ks, 0.0, 1.0),
            ("max_psi", self.max_psi, 0.0, f64::MAX),
        ];
        if checks.iter().all(|(_, t, _, _)| t.is_none()) {
            return Err(ConfigError::new(
                ConfigErrorKind::Zero,
                "drift check has no threshold set; set at least one",
            ));
        }
        for (what, t, lo, hi) in checks {
            if let Some(t) = t {
                if !(lo..=hi).contains(&t) {
                    return range(format!("drift {what} {t} is not in {lo}..={hi}"));
                }
            }
        }
        if self.min_pairs == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::Zero,
                "drift min_pairs must be positive",
            ));
        }
        if !(2..=1000).contains(&self.psi_bins) {
            return range(format!(
                "drift psi_bins {} is not in 2..=1000",
                self.psi_bins
            ));
        }
        if (self.max_scores as u64) < self.min_pairs || self.max_scores > 1_000_000 {
            return range(format!(
                "drift max_scores {} must be in min_pairs ({})..=1000000",
                self.max_scores, self.min_pairs
            ));
        }
        Ok(())
    }
}

/// The drift figures of the current analysis window.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct DriftReport {
    /// Pairs recorded.
    pub pairs: u64,
    /// Pairs in which both outputs had a top-1 class.
    pub top1_pairs: u64,
    /// Share of those with the same class.
    pub top1_agreement: Option<f64>,
    /// Pairs in which both outputs had an embedding.
    pub cosine_pairs: u64,
    /// Mean cosine similarity over those.
    pub mean_cosine: Option<f64>,
    /// Scores kept of the stable (baseline) outputs.
    pub baseline_scores: usize,
    /// Scores kept of the canary outputs.
    pub canary_scores: usize,
    /// Kolmogorov–Smirnov `D` between the two score samples.
    pub ks: Option<f64>,
    /// PSI of the canary's scores against the baseline's.
    pub psi: Option<f64>,
}

#[derive(Debug, Default)]
struct Window {
    pairs: u64,
    top1_pairs: u64,
    top1_agree: u64,
    cosine_pairs: u64,
    cosine_sum: f64,
    baseline: VecDeque<f64>,
    canary: VecDeque<f64>,
}

/// Collects (stable, canary) output pairs for a rollout's drift check.
/// Cheap to clone; clones share the window.
#[derive(Clone)]
pub struct DriftMonitor {
    config: Arc<DriftConfig>,
    window: Arc<Mutex<Window>>,
}

impl fmt::Debug for DriftMonitor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftMonitor")
            .field("config", &self.config)
            .field("pairs", &self.window.lock().pairs)
            .finish()
    }
}

pub(crate) enum DriftVerdict {
    Wait(String),
    Pass(String),
    Fail(String),
}

impl DriftMonitor {
    /// Validates `config`.
    pub fn new(config: DriftConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            config: Arc::new(config),
            window: Arc::default(),
        })
    }

    /// The thresholds.
    pub fn config(&self) -> &DriftConfig {
        &self.config
    }

    /// Records the stable (`baseline`) and the canary output for one request.
    pub fn record<B, C>(&self, baseline: &B, canary: &C)
    where
        B: Prediction + ?Sized,
        C: Prediction + ?Sized,
    {
        let top1 = baseline.top1().zip(canary.top1());
        let cosine = baseline
            .embedding()
            .zip(canary.embedding())
            .map(|(a, b)| cosine(a, b));
        let scores = [baseline.score(), canary.score()].map(|s| s.filter(|x| x.is_finite()));
        let cap = self.config.max_scores;
        let mut guard = self.window.lock();
        let w = &mut *guard;
        w.pairs += 1;
        if let Some((a, b)) = top1 {
            w.top1_pairs += 1;
            w.top1_agree += u64::from(a == b);
        }
        if let Some(c) = cosine {
            w.cosine_pairs += 1;
            w.cosine_sum += c;
        }
        for (side, s) in [&mut w.baseline, &mut w.canary].into_iter().zip(scores) {
            if let Some(s) = s {
                if side.len() == cap {
                    side.pop_front();
                }
                side.push_back(s);
            }
        }
    }

    /// Starts a new analysis window (the rollout does this at each step and
    /// after each failed analysis).
    pub fn reset(&self) {
        *self.window.lock() = Window::default();
    }

    /// The figures of the current window.
    pub fn report(&self) -> DriftReport {
        let ratio = |num: f64, den: u64| (den > 0).then(|| num / den as f64);
        let (mut report, baseline, canary) = {
            let w = self.window.lock();
            let report = DriftReport {
                pairs: w.pairs,
                top1_pairs: w.top1_pairs,
                top1_agreement: ratio(w.top1_agree as f64, w.top1_pairs),
                cosine_pairs: w.cosine_pairs,
                mean_cosine: ratio(w.cosine_sum, w.cosine_pairs),
                baseline_scores: w.baseline.len(),
                canary_scores: w.canary.len(),
                ks: None,
                psi: None,
            };
            let copy = |d: &VecDeque<f64>| d.iter().copied().collect::<Vec<_>>();
            (report, copy(&w.baseline), copy(&w.canary))
        };
        // The tests sort the samples: done outside the lock, so recording
        // pairs never waits for an analysis.
        if !baseline.is_empty() && !canary.is_empty() {
            report.ks = Some(ks_statistic(&baseline, &canary));
            report.psi = Some(psi(&baseline, &canary, self.config.psi_bins));
        }
        report
    }

    pub(crate) fn verdict(&self) -> DriftVerdict {
        let cfg = &self.config;
        let r = self.report();
        let min = cfg.min_pairs;
        let scores = r.baseline_scores.min(r.canary_scores) as u64;
        let mut passed = Vec::new();
        let mut check = |value: Option<f64>,
                         n: u64,
                         what: &str,
                         limit: Option<f64>,
                         at_least: bool,
                         unit: &str|
         -> Option<DriftVerdict> {
            let limit = limit?;
            let value = match value {
                Some(v) if n >= min => v,
                _ => {
                    return Some(DriftVerdict::Wait(format!(
                        "drift: {n} of {min} {unit} needed for {what}"
                    )))
                }
            };
            let ok = if at_least {
                value >= limit
            } else {
                value <= limit
            };
            let op = match (at_least, ok) {
                (true, true) => ">=",
                (true, false) => "<",
                (false, true) => "<=",
                (false, false) => ">",
            };
            let figure = format!("{what} {value:.3} {op} {limit} over {n} {unit}");
            if ok {
                passed.push(figure);
                None
            } else {
                Some(DriftVerdict::Fail(format!("drift: {figure}")))
            }
        };
        let verdicts = [
            check(
                r.top1_agreement,
                r.top1_pairs,
                "top-1 agreement",
                cfg.min_top1_agreement,
                true,
                "pairs",
            ),
            check(
                r.mean_cosine,
                r.cosine_pairs,
                "mean embedding cosine",
                cfg.min_mean_cosine,
                true,
                "pairs",
            ),
            check(r.ks, scores, "score KS D", cfg.max_ks, false, "scores"),
            check(r.psi, scores, "score PSI", cfg.max_psi, false, "scores"),
        ];
        // A failure decides even if another check still waits for samples.
        let mut wait = None;
        for v in verdicts.into_iter().flatten() {
            match v {
                DriftVerdict::Fail(_) => return v,
                DriftVerdict::Wait(_) => wait = wait.or(Some(v)),
                DriftVerdict::Pass(_) => {}
            }
        }
        wait.unwrap_or_else(|| DriftVerdict::Pass(format!("drift: {}", passed.join(", "))))
    }
}

/// Cosine similarity; 0 when the lengths differ or either vector is zero
/// or not finite.
fn cosine(a: &[f32], b: &[f32]) -> f64 {
    if a.len() != b.len() {
        return 0.0;
    }
    let (mut dot, mut na, mut nb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        let (x, y) = (f64::from(x), f64::from(y));
        dot += x * y;
        na += x * x;
        nb += y * y;
    }
    let c = dot / (na.sqrt() * nb.sqrt());
    if c.is_finite() {
        c.clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

fn sorted_finite(xs: &[f64]) -> Vec<f64> {
    let mut v: Vec<f64> = xs.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    v
}

/// Two-sample Kolmogorov–Smirnov statistic: the largest distance between
/// the empirical distribution functions of `a` and `b`, in `[0, 1]`.
/// Non-finite values are ignored; 0 when either sample is empty.
pub fn ks_statistic(a: &[f64], b: &[f64]) -> f64 {
    let (a, b) = (sorted_finite(a), sorted_finite(b));
    if a.is_empty() || b.is_empty() {
        return 0.0;
    }
    let (na, nb) = (a.len() as f64, b.len() as f64);
    let (mut i, mut j, mut d) = (0usize, 0usize, 0.0f64);
    while i < a.len() && j < b.len() {
        // Step past every copy of the smallest value in both samples at once,
        // so ties never open a gap.
        let x = a[i].min(b[j]);
        while i < a.len() && a[i] <= x {
            i += 1;
        }
        while j < b.len() && b[j] <= x {
            j += 1;
        }
        d = d.max((i as f64 / na - j as f64 / nb).abs());
    }
    d.min(1.0)
}

/// Population stability index of `actual` against `expected`, over `bins`
/// bins cut at `expected`'s quantiles: `Σ (a − e)·ln(a / e)` over the bins'
/// shares, each share floored at 1e-4 so an empty bin gives a large finite
/// term. Always ≥ 0; 0 when either sample is empty. Non-finite values are
/// ignored.
pub fn psi(expected: &[f64], actual: &[f64], bins: usize) -> f64 {
    const FLOOR: f64 = 1e-4;
    let (e, a) = (sorted_finite(expected), sorted_finite(actual));
    if e.is_empty() || a.is_empty() || bins < 2 {
        return 0.0;
    }
    let mut cuts: Vec<f64> = (1..bins).map(|k| e[k * e.len() / bins]).collect();
    cuts.dedup();
    let shares = |xs: &[f64]| {
        let mut counts = vec![0usize; cuts.len() + 1];
        for x in xs {
            counts[cuts.partition_point(|c| c <= x)] += 1;
        }
        counts
            .into_iter()
            .map(|c| (c as f64 / xs.len() as f64).max(FLOOR))
            .collect::<Vec<_>>()
    };
    let (se, sa) = (shares(&e), shares(&a));
    // Each term is ≥ 0 (the log and the difference have the same sign).
    se.iter()
        .zip(&sa)
        .map(|(e, a)| ((a - e) * (a / e).ln()).max(0.0))
        .sum()
}

/// A [`Shadow`](crate::Shadow) comparison hook feeding a [`DriftMonitor`].
///
/// `extract` turns a response into a [`Prediction`]. By default the
/// shadow's primary is the stable version and the shadow the canary; call
/// [`primary_is_canary`](Self::primary_is_canary) when the canary's requests
/// are mirrored to the stable version instead. Failed or timed-out
/// requests are not compared (the error-rate check sees them).
pub struct DriftCompare<F> {
    monitor: DriftMonitor,
    extract: F,
    primary_is_canary: bool,
}

impl<F> fmt::Debug for DriftCompare<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DriftCompare")
            .field("monitor", &self.monitor)
            .field("primary_is_canary", &self.primary_is_canary)
            .finish_non_exhaustive()
    }
}

impl<F> DriftCompare<F> {
    /// Records into `monitor` what `extract` reads from both responses.
    pub fn new(monitor: DriftMonitor, extract: F) -> Self {
        Self {
            monitor,
            extract,
            primary_is_canary: false,
        }
    }

    /// The primary is the canary and the shadow the stable version.
    pub fn primary_is_canary(mut self) -> Self {
        self.primary_is_canary = true;
        self
    }
}

impl<R, E, F, P> Compare<Result<R, E>, R> for DriftCompare<F>
where
    F: Fn(&R) -> P + Send + Sync + 'static,
    P: Prediction + Send + 'static,
{
    type Kept = P;

    fn keep(&self, primary: &Result<R, E>) -> Option<P> {
        primary.as_ref().ok().map(&self.extract)
    }

    fn compare(&self, primary: P, shadow: Result<R, ShadowError>) {
        let Ok(shadow) = shadow else { return };
        let shadow = (self.extract)(&shadow);
        if self.primary_is_canary {
            self.monitor.record(&shadow, &primary);
        } else {
            self.monitor.record(&primary, &shadow);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logits_top1_and_score() {
        let l = Logits(vec![0.0f32, f32::NAN, 2.0, 1.0]);
        assert_eq!(l.top1(), Some(2));
        let p = l.score().unwrap();
        let expect = 1.0 / (1.0 + (-2.0f64).exp() + (-1.0f64).exp());
        assert!((p - expect).abs() < 1e-12, "{p}");
        assert_eq!(Logits(Vec::<f32>::new()).top1(), None);
        assert_eq!(Logits(Vec::<f32>::new()).score(), None);
    }

    #[test]
    fn cosine_edge_cases() {
        assert!((cosine(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-12);
        assert!(cosine(&[1.0, 0.0], &[0.0, 1.0]).abs() < 1e-12);
        assert_eq!(cosine(&[1.0], &[1.0, 0.0]), 0.0);
        assert_eq!(cosine(&[0.0, 0.0], &[1.0, 0.0]), 0.0);
    }

    #[test]
    fn ks_of_disjoint_samples_is_one() {
        assert_eq!(ks_statistic(&[1.0, 2.0], &[3.0, 4.0, 5.0]), 1.0);
        assert_eq!(ks_statistic(&[1.0, 1.0, 1.0], &[1.0]), 0.0);
        assert!((ks_statistic(&[1.0, 2.0], &[2.0, 3.0]) - 0.5).abs() < 1e-12);
    }

    #[test]
    fn score_window_is_bounded() {
        let m = DriftMonitor::new(DriftConfig {
            min_pairs: 2,
            max_scores: 3,
            ..DriftConfig::default()
        })
        .unwrap();
        for i in 0..10 {
            m.record(&Score(f64::from(i)), &Score(f64::NAN));
        }
        let r = m.report();
        assert_eq!((r.pairs, r.baseline_scores, r.canary_scores), (10, 3, 0));
        assert_eq!(r.ks, None);
    }

    fn verdict_text(m: &DriftMonitor) -> (&'static str, String) {
        match m.verdict() {
            DriftVerdict::Wait(r) => ("wait", r),
            DriftVerdict::Pass(r) => ("pass", r),
            DriftVerdict::Fail(r) => ("fail", r),
        }
    }

    #[test]
    fn score_distribution_checks_decide_with_their_figures() {
        let m = DriftMonitor::new(DriftConfig {
            min_pairs: 50,
            min_top1_agreement: None,
            max_ks: Some(0.2),
            max_psi: Some(0.2),
            ..DriftConfig::default()
        })
        .unwrap();
        for i in 0..49 {
            let x = f64::from(i) / 49.0;
            m.record(&Score(x), &Score(x));
        }
        let (kind, reason) = verdict_text(&m);
        assert_eq!(kind, "wait", "{reason}");
        assert!(reason.contains("49 of 50 scores"), "{reason}");
        m.record(&Score(0.5), &Score(0.5));
        let (kind, reason) = verdict_text(&m);
        assert_eq!(kind, "pass", "{reason}");
        assert!(
            reason.contains("score KS D 0.000 <= 0.2 over 50 scores"),
            "{reason}"
        );
        // Same shapes, scores shifted up by half their range.
        m.reset();
        for i in 0..100 {
            let x = f64::from(i);
            m.record(&Score(x), &Score(x + 50.0));
        }
        let (kind, reason) = verdict_text(&m);
        assert_eq!(kind, "fail", "{reason}");
        assert_eq!(reason, "drift: score KS D 0.500 > 0.2 over 100 scores");
    }

    #[test]
    fn invalid_configs_are_rejected() {
        let bad = [
            DriftConfig {
                min_top1_agreement: None,
                max_psi: None,
                ..DriftConfig::default()
            },
            DriftConfig {
                min_top1_agreement: Some(1.5),
                ..DriftConfig::default()
            },
            DriftConfig {
                max_psi: Some(f64::NAN),
                ..DriftConfig::default()
            },
            DriftConfig {
                min_pairs: 0,
                ..DriftConfig::default()
            },
            DriftConfig {
                psi_bins: 1,
                ..DriftConfig::default()
            },
            DriftConfig {
                max_scores: 10,
                ..DriftConfig::default()
            },
        ];
        for c in bad {
            assert!(DriftMonitor::new(c.clone()).is_err(), "{c:?}");
        }
        assert!(DriftMonitor::new(DriftConfig::encoder()).is_ok());
    }
}
