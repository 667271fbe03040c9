//! A batch cost curve `cost(n) = a + b·n` learned over hours, with the
//! confidence of its extrapolation, for [`Adaptive`](super::Adaptive).
//!
//! A replica that never saturates forms batches whose mean size hardly
//! varies within a minute (1.1–1.3 on a fast replica at low load), too
//! little to separate `a` from `b`. Over hours the load changes and so do
//! the batch sizes, so the same least-squares fit, kept as exponentially
//! forgotten sums (O(1) per sample, no buffer), separates them. Its residual
//! says how far the straight line may be trusted beyond the sizes seen.

use std::time::Duration;

use crate::signal::{BatchCost, LoadSample};

/// Exponentially forgotten sums of a weighted least-squares fit of the mean
/// batch cost `y = busy / batches` on the mean batch size
/// `x = items / batches`, each sample weighted by its batch count.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct CostMemory {
    /// Σw, Σw·x, Σw·y, Σw·x², Σw·x·y, Σw·y² (w = batches).
    w: f64,
    x: f64,
    y: f64,
    xx: f64,
    xy: f64,
    yy: f64,
    /// Number of samples (forgotten at the same rate).
    samples: f64,
    /// Time of the newest sample absorbed.
    at: Option<Duration>,
}

/// A fit and how far it may be extrapolated.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct CostFit {
    /// The fitted curve.
    pub(crate) cost: BatchCost,
    /// Mean batch size of the samples behind it.
    pub(crate) mean_batch: f64,
    /// Residual variance of a sample's mean batch cost (s²).
    residual: f64,
    /// Variance of the samples' mean batch sizes.
    spread: f64,
    /// Effective number of samples.
    samples: f64,
}

impl CostMemory {
    /// Absorbs the sample taken at `at` (older or repeated ones are
    /// ignored), forgetting with time constant `memory`.
    pub(crate) fn absorb(&mut self, at: Duration, sample: &LoadSample, memory: Duration) {
        if self.at.is_some_and(|last| at <= last) {
            return;
        }
        let dt = self.at.map_or(0.0, |last| (at - last).as_secs_f64());
        self.at = Some(at);
        let keep = (-dt / memory.as_secs_f64()).exp();
        for v in [
            &mut self.w,
            &mut self.x,
            &mut self.y,
            &mut self.xx,
            &mut self.xy,
            &mut self.yy,
            &mut self.samples,
        ] {
            *v *= keep;
        }
        let busy = sample.batch_busy.as_secs_f64();
        if sample.batches == 0 || sample.batch_items == 0 || !busy.is_finite() {
            return;
        }
        let w = sample.batches as f64;
        let x = sample.batch_items as f64 / w;
        let y = busy / w;
        self.w += w;
        self.x += w * x;
        self.y += w * y;
        self.xx += w * x * x;
        self.xy += w * x * y;
        self.yy += w * y * y;
        self.samples += 1.0;
    }

    /// The newest sample absorbed.
    pub(crate) fn latest(&self) -> Option<Duration> {
        self.at
    }

    /// The two-term fit (`a ≥ 0`, `b ≥ 0`), if the sizes spread at all.
    pub(crate) fn fit(&self) -> Option<CostFit> {
        if self.w <= 0.0 || self.samples < 3.0 {
            return None;
        }
        let (mx, my) = (self.x / self.w, self.y / self.w);
        let spread = self.xx / self.w - mx * mx;
        // Below this the sizes are one size plus rounding (NaN is refused too).
        if spread.is_nan() || spread <= 1e-6 * mx * mx {
            return None;
        }
        let cov = self.xy / self.w - mx * my;
        let b = cov / spread;
        let a = my - b * mx;
        if a.is_nan() || b.is_nan() || a < 0.0 || b < 0.0 {
            return None;
        }
        let residual = (self.yy / self.w - my * my - b * cov).max(0.0);
        let cost = BatchCost::new(
            Duration::try_from_secs_f64(a).ok()?,
            Duration::try_from_secs_f64(b).ok()?,
        );
        Some(CostFit {
            cost,
            mean_batch: mx,
            residual,
            spread,
            samples: self.samples,
        })
    }
}

impl CostFit {
    /// Relative error (three standard errors over the predicted cost) of
    /// the fit's prediction for a batch of `n`: small near the sizes seen,
    /// growing with the distance from them and with the residual.
    pub(crate) fn relative_error(&self, n: f64) -> f64 {
        let predicted = self.cost.seconds(n);
        if predicted <= 0.0 {
            return f64::INFINITY;
        }
        let d = n - self.mean_batch;
        let se = (self.residual / self.samples * (1.0 + d * d / self.spread)).sqrt();
        3.0 * se / predicted
    }

    /// Whether the sizes spread enough (a coefficient of variation of
    /// 10 %) for the fit to be trusted whatever its residual.
    pub(crate) fn spreads(&self) -> bool {
        self.spread >= 0.01 * self.mean_batch * self.mean_batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(batches: u64, items: u64, a_ms: f64, b_ms: f64, noise: f64) -> LoadSample {
        let per = a_ms + b_ms * items as f64 / batches as f64;
        LoadSample {
            batches,
            batch_items: items,
            batch_busy: Duration::from_secs_f64(batches as f64 * per * (1.0 + noise) / 1e3),
            ..LoadSample::default()
        }
    }

    /// Ten minutes of a GPU-like replica (8 ms + 0.5 ms·n) at mean batches
    /// of 1.10–1.29, each second's cost off by `noise(t)` (a fraction).
    fn gpu_like(noise: impl Fn(u64) -> f64) -> CostMemory {
        let mut m = CostMemory::default();
        for t in 0..600u64 {
            let s = sample(100, 110 + (t % 20), 8.0, 0.5, noise(t));
            m.absorb(Duration::from_secs(t), &s, Duration::from_secs(3600));
        }
        m
    }

    #[test]
    fn a_narrow_but_exact_spread_separates_fixed_and_per_item_cost() {
        // The one-minute window's 10 % spread rule refuses these sizes.
        let fit = gpu_like(|_| 0.0).fit().unwrap();
        assert!(!fit.spreads());
        let (a, b) = (
            fit.cost.fixed.as_secs_f64(),
            fit.cost.per_item.as_secs_f64(),
        );
        assert!((a - 0.008).abs() < 1e-6, "{fit:?}");
        assert!((b - 0.0005).abs() < 1e-7, "{fit:?}");
        // Exact: the prediction at 64 is as good as at the sizes seen.
        let err = fit.relative_error(64.0);
        assert!(err < 0.01, "{err}");
    }

    #[test]
    fn noise_on_a_narrow_spread_is_not_extrapolated() {
        // +5 % / -2.5 % noise, uncorrelated with the size.
        let m = gpu_like(|t| if (t * 7919) % 3 == 0 { 0.05 } else { -0.025 });
        if let Some(fit) = m.fit() {
            assert!(fit.relative_error(64.0) > 0.1, "{fit:?}");
        }
    }

    #[test]
    fn old_samples_are_forgotten_and_repeats_ignored() {
        let mut m = CostMemory::default();
        let minute = Duration::from_secs(60);
        let s = sample(10, 20, 20.0, 5.0, 0.0);
        m.absorb(Duration::from_secs(1), &s, minute);
        m.absorb(Duration::from_secs(1), &s, minute);
        assert_eq!(m.samples, 1.0);
        m.absorb(Duration::from_secs(3_601), &LoadSample::default(), minute);
        assert!(m.w < 1e-20, "{}", m.w);
        assert_eq!(m.latest(), Some(Duration::from_secs(3_601)));
        assert_eq!(m.fit(), None);
    }
}
