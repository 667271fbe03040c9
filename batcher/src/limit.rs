//! The learned size limit: the largest batch the batch service can run,
//! when it fails batches for being too large (a memory quota, an out of
//! memory error).
//!
//! The layer says which errors mean "too large"
//! ([`BatchLayer::size_limit`](crate::BatchLayer::size_limit)). When a batch
//! of `n` items fails with one, `n` does not fit: the limit drops to the
//! largest size known to fit below `n`, or `n / 2` (the halves failure
//! isolation runs next). Batches are formed under the limit from then on,
//! so a later burst is not first tried at the size that failed. Each batch
//! that succeeds raises the size known to fit.
//!
//! After [`probe_after`](SizeLimitConfig::probe_after) without a
//! too-large failure and with at least one success at the limit, the limit
//! is raised halfway to the smallest size that failed (a binary search
//! between what fits and what failed, one step per period); once the two
//! are neighbours, the failed size is forgotten and the next step goes
//! halfway to `max_batch_size`, so a limit learned under a load that has
//! gone (a neighbour's memory, longer inputs) does not stay forever. A step
//! that fails costs one failed batch, whose halves run again.
//!
//! A batch of one that fails as too large teaches nothing about batching
//! and leaves the limit alone.

use std::time::Duration;

use tokio::time::Instant;

/// Settings of the learned size limit, see
/// [`BatchLayer::size_limit`](crate::BatchLayer::size_limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SizeLimitConfig {
    /// How long the limit holds without a too-large failure (and with a
    /// success at the limit) before a larger size is tried (default 30 s,
    /// above zero).
    pub probe_after: Duration,
}

impl Default for SizeLimitConfig {
    fn default() -> Self {
        Self {
            probe_after: Duration::from_secs(30),
        }
    }
}

/// The worker's learned limit; updated per finished batch.
#[derive(Debug)]
pub(crate) struct SizeLimit {
    config: SizeLimitConfig,
    max: usize,
    /// Batches are formed with at most this many items.
    limit: usize,
    /// The largest size that succeeded below `fails`.
    fits: usize,
    /// The smallest size that failed as too large (`max + 1`: none known).
    fails: usize,
    /// When the limit last changed or a batch last failed as too large.
    since: Instant,
    /// Successful batches of at least `limit` items since then.
    successes: u32,
}

impl SizeLimit {
    pub(crate) fn new(config: SizeLimitConfig, max_batch_size: usize, now: Instant) -> Self {
        let max = max_batch_size.max(1);
        Self {
            config,
            max,
            limit: max,
            fits: 0,
            fails: max + 1,
            since: now,
            successes: 0,
        }
    }

    /// The most items a batch is formed with now, in `1..=max_batch_size`.
    pub(crate) fn limit(&self) -> usize {
        self.limit
    }

    /// `max_batch_size` changed.
    pub(crate) fn set_max(&mut self, max_batch_size: usize) {
        self.max = max_batch_size.max(1);
        self.limit = self.limit.min(self.max);
        self.fails = self.fails.min(self.max + 1);
        self.fits = self.fits.min(self.max);
    }

    /// A batch of `size` items failed as too large.
    pub(crate) fn too_large(&mut self, size: usize, now: Instant) {
        if size <= 1 {
            return;
        }
        if size <= self.fits {
            // It fitted before: what fits has changed.
            self.fits = 0;
        }
        self.fails = self.fails.min(size);
        self.limit = self.limit.min(self.fits.max(size / 2)).max(1);
        self.since = now;
        self.successes = 0;
    }

    /// A batch of `size` items succeeded.
    pub(crate) fn fitted(&mut self, size: usize) {
        if size >= self.fails {
            // A size that failed ran: the failure was not its size alone.
            self.fails = (size + 1).min(self.max + 1);
        }
        self.fits = self.fits.max(size);
        if size >= self.limit {
            self.successes = self.successes.saturating_add(1);
        }
    }

    /// Raises the limit when it has held long enough; returns whether it
    /// changed.
    pub(crate) fn poll(&mut self, now: Instant) -> bool {
        if self.limit >= self.max
            || self.successes == 0
            || now.saturating_duration_since(self.since) < self.config.probe_after
        {
            return false;
        }
        let known = self.limit.max(self.fits.min(self.max));
        if self.fails <= known + 1 {
            // Converged: forget the failure, try halfway to the max.
            self.fails = self.max + 1;
        }
        self.limit = known + (self.fails - known) / 2;
        self.limit = self.limit.clamp(1, self.max);
        self.since = now;
        self.successes = 0;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PERIOD: Duration = Duration::from_secs(30);

    fn limit(max: usize) -> (SizeLimit, Instant) {
        let now = Instant::now();
        let config = SizeLimitConfig {
            probe_after: PERIOD,
        };
        (SizeLimit::new(config, max, now), now)
    }

    /// Runs batches of the limit against a service where `fit` items fit,
    /// halving failures as isolation does; returns the sizes tried.
    fn run(l: &mut SizeLimit, fit: usize, now: Instant) -> Vec<usize> {
        let mut tried = Vec::new();
        let mut parts = vec![l.limit()];
        while let Some(n) = parts.pop() {
            tried.push(n);
            if n <= fit {
                l.fitted(n);
            } else {
                l.too_large(n, now);
                if n > 1 {
                    parts.push(n - n / 2);
                    parts.push(n / 2);
                }
            }
        }
        tried
    }

    #[test]
    fn a_failure_caps_at_the_halves_and_a_probe_searches_upward() {
        let (mut l, t0) = limit(32);
        // 20 fit: 32 fails, its halves of 16 run.
        assert_eq!(run(&mut l, 20, t0), [32, 16, 16]);
        assert_eq!(l.limit(), 16);
        // Until the period ends, batches stay at 16.
        assert!(!l.poll(t0 + PERIOD / 2));
        assert_eq!(run(&mut l, 20, t0), [16]);
        // Then a binary search between 16 (fits) and 32 (failed).
        assert!(l.poll(t0 + PERIOD));
        assert_eq!(l.limit(), 24);
        let t1 = t0 + PERIOD;
        assert_eq!(run(&mut l, 20, t1), [24, 12, 12]);
        assert_eq!(l.limit(), 16, "back to what fits");
        run(&mut l, 20, t1);
        assert!(l.poll(t1 + PERIOD));
        assert_eq!(l.limit(), 20);
        let t2 = t1 + PERIOD;
        assert_eq!(run(&mut l, 20, t2), [20]);
        assert!(l.poll(t2 + PERIOD));
        assert_eq!(l.limit(), 22);
        let t3 = t2 + PERIOD;
        run(&mut l, 20, t3);
        assert_eq!(l.limit(), 20);
        run(&mut l, 20, t3);
        assert!(l.poll(t3 + PERIOD));
        assert_eq!(l.limit(), 21);
        let t4 = t3 + PERIOD;
        run(&mut l, 20, t4);
        assert_eq!(l.limit(), 20, "converged: 20 fits, 21 does not");
    }

    #[test]
    fn a_converged_limit_tries_again_towards_the_max() {
        let (mut l, t0) = limit(32);
        run(&mut l, 16, t0);
        assert_eq!(l.limit(), 16);
        // Converged on the first failure? 16 fits, 32 failed: not yet.
        run(&mut l, 16, t0);
        assert!(l.poll(t0 + PERIOD));
        assert_eq!(l.limit(), 24);
        // Now everything fits (a neighbour's memory was freed).
        let t1 = t0 + PERIOD;
        run(&mut l, 32, t1);
        assert!(l.poll(t1 + PERIOD));
        assert_eq!(l.limit(), 28);
        let mut t = t1 + PERIOD;
        for _ in 0..8 {
            run(&mut l, 32, t);
            t += PERIOD;
            l.poll(t);
        }
        assert_eq!(l.limit(), 32, "back to max_batch_size");
    }

    #[test]
    fn no_probe_without_a_success_at_the_limit() {
        let (mut l, t0) = limit(32);
        l.too_large(32, t0);
        assert_eq!(l.limit(), 16);
        // Only smaller batches ran (the load is light).
        l.fitted(3);
        assert!(!l.poll(t0 + PERIOD * 10));
        l.fitted(16);
        assert!(l.poll(t0 + PERIOD * 10));
    }

    #[test]
    fn a_single_item_too_large_leaves_the_limit_alone() {
        let (mut l, t0) = limit(32);
        l.too_large(1, t0);
        assert_eq!(l.limit(), 32);
    }

    #[test]
    fn what_fitted_before_and_fails_now_is_forgotten() {
        let (mut l, t0) = limit(32);
        l.fitted(24);
        l.too_large(32, t0);
        assert_eq!(l.limit(), 24, "what fitted");
        l.too_large(24, t0);
        assert_eq!(l.limit(), 12);
    }

    proptest! {
        /// Against a service where `fit` items fit, the limit stays in
        /// `1..=max`, never above a size that failed since, and finds the
        /// largest batch that fits.
        #[test]
        fn the_limit_finds_the_largest_batch_that_fits(max in 1usize..200, fit in 1usize..250) {
            let (mut l, mut t) = limit(max);
            for _ in 0..40 {
                run(&mut l, fit, t);
                prop_assert!((1..=max).contains(&l.limit()));
                t += PERIOD;
                l.poll(t);
                prop_assert!((1..=max).contains(&l.limit()));
            }
            run(&mut l, fit, t);
            prop_assert_eq!(l.limit(), fit.min(max));
        }
    }
}
