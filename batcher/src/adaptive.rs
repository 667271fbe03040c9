//! The adaptive batch-size cap: keeps batches at the size where the batch
//! service's measured throughput is best.
//!
//! Sizes are grouped in power-of-two buckets: bucket `k` holds batches of
//! `2^(k-1) + 1 ..= 2^k` items (bucket 0 holds batches of one). The cap is
//! the top of the current bucket (never above `max_batch_size`). For each
//! bucket the worker keeps a mean of the service time per item (a running
//! mean for the first samples, then an EWMA), so throughput compares as
//! `items / second = 1 / seconds_per_item`.
//!
//! Schedule: the batcher starts at `max_batch_size`. After
//! [`min_samples`](AdaptiveConfig::min_samples) batches it probes the
//! neighbouring bucket: the cap moves there for up to `4 × min_samples`
//! batches, fresh measurements of that bucket are collected, and the cap
//! moves if the neighbour is better (a smaller bucket when its throughput is
//! higher, a larger one when it is more than
//! [`margin_percent`](AdaptiveConfig::margin_percent) higher; a smaller one
//! also when the load fills it but never the current bucket). A probe whose
//! first two batches are over twice as slow per item as the current bucket
//! ends at once, so a bad direction costs two batches. After a move
//! it probes on in the same direction at once; otherwise it settles and
//! probes again after [`explore_every`](AdaptiveConfig::explore_every)
//! batches, alternately the larger and the smaller neighbour. When the
//! settled bucket becomes half again slower per item than when it was
//! chosen (the model or the machine changed), its measurements are dropped,
//! it is measured afresh over `min_samples` batches and probing starts at
//! once. Only batches that succeeded count.
//!
//! A [profile](crate::BatchConfigBuilder::adaptive_profile) measured before
//! serving (a warm-up at each power-of-two size) lets the cap start where
//! the model is fastest instead of at `max_batch_size`: each profiled bucket
//! counts as measured over `min_samples` batches, the cap starts at the best
//! one by the same rule as a probe (a larger bucket must be `margin_percent`
//! faster per item), and live batches refine the figures from there.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{ConfigError, ConfigErrorKind};

/// Weight of the newest batch in a bucket's mean once the bucket has
/// `1 / ALPHA` samples (a running mean before that).
const ALPHA: f64 = 0.125;
/// Number of buckets: sizes up to `usize::MAX` are in bucket 64 or below.
const BUCKETS: usize = usize::BITS as usize + 1;
/// A probe ends after at most this many times `min_samples` batches.
const PROBE_LIMIT: u32 = 4;
/// A probe ends early, as a loss, once two of its batches are this much
/// slower per item than the current bucket: a bad direction costs little.
const ABORT_FACTOR: f64 = 2.0;
/// Batches a probe needs before it may end early.
const ABORT_SAMPLES: u32 = 2;
/// A settled bucket this much slower per item than when it was chosen is
/// measured afresh and its neighbours probed at once.
const CHANGE_FACTOR: f64 = 1.5;

/// Settings of the adaptive batch-size cap, enabled with
/// [`BatchConfigBuilder::adaptive_batch_size`](crate::BatchConfigBuilder::adaptive_batch_size).
///
/// The defaults suit most models; see the crate documentation for the
/// probing schedule these numbers drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AdaptiveConfig {
    /// Successful batches of a size bucket needed before it is compared
    /// with another (default 8, at least 1). More samples resist noisy
    /// service times better and adapt more slowly.
    pub min_samples: u32,
    /// Batches between two probes of a neighbouring bucket while the cap is
    /// settled (default 64, at least 1).
    pub explore_every: u32,
    /// How much higher (in percent) a larger bucket's throughput must be
    /// for the cap to grow (default 5, at most 100). Growing costs latency,
    /// so it must pay.
    pub margin_percent: u32,
}

impl Default for AdaptiveConfig {
    fn default() -> Self {
        Self {
            min_samples: 8,
            explore_every: 64,
            margin_percent: 5,
        }
    }
}

impl AdaptiveConfig {
    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.min_samples == 0 || self.explore_every == 0 || self.margin_percent > 100 {
            return Err(ConfigError::new(
                ConfigErrorKind::AdaptiveBatchSize,
                format!(
                    "adaptive batch size needs min_samples >= 1, explore_every >= 1 and \
                     margin_percent <= 100, got {self:?}"
                ),
            ));
        }
        Ok(())
    }
}

/// The bucket of a batch of `n` items: `ceil(log2(n))`.
fn bucket(n: usize) -> usize {
    (usize::BITS - n.saturating_sub(1).leading_zeros()) as usize
}

/// The largest batch of bucket `k`.
fn top_of(k: usize) -> usize {
    u32::try_from(k)
        .ok()
        .and_then(|k| 1usize.checked_shl(k))
        .unwrap_or(usize::MAX)
}

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    secs_per_item: f64,
    samples: u32,
}

impl Bucket {
    fn add(&mut self, secs_per_item: f64) {
        self.samples = self.samples.saturating_add(1);
        let weight = (1.0 / f64::from(self.samples)).max(ALPHA);
        self.secs_per_item += weight * (secs_per_item - self.secs_per_item);
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Settled,
    Probing(usize),
}

/// The worker's adaptive cap state; updated once per finished batch.
#[derive(Debug)]
pub(crate) struct Adaptive {
    config: AdaptiveConfig,
    max: usize,
    /// Bucket of `max`.
    top: usize,
    buckets: [Bucket; BUCKETS],
    current: usize,
    phase: Phase,
    /// Batches since the phase began.
    since: u32,
    up_next: bool,
    /// Seconds per item of the settled bucket when it was chosen.
    reference: Option<f64>,
}

impl Adaptive {
    pub(crate) fn new(config: AdaptiveConfig, max_batch_size: usize) -> Self {
        let top = bucket(max_batch_size.max(1));
        Self {
            config,
            max: max_batch_size.max(1),
            top,
            buckets: [Bucket::default(); BUCKETS],
            current: top,
            phase: Phase::Settled,
            // The first probe comes once the starting bucket has been measured.
            since: config.explore_every.saturating_sub(config.min_samples),
            up_next: true,
            reference: None,
        }
    }

    /// [`Adaptive::new`] started from `profile` (see [`Adaptive::seed`]):
    /// the one place the worker and the control's first published cap
    /// build it, so the two agree.
    pub(crate) fn seeded(
        config: AdaptiveConfig,
        max_batch_size: usize,
        profile: &[(usize, Duration)],
    ) -> Self {
        let mut adaptive = Self::new(config, max_batch_size);
        adaptive.seed(profile);
        adaptive
    }

    /// Starts from `profile`, the service time of a batch of each listed
    /// size measured before serving (sizes above `max_batch_size` are
    /// ignored): each bucket with a measurement counts as measured over
    /// `min_samples` batches, and the cap starts at the best bucket, walking
    /// up from the smallest as probes would (a larger bucket must be
    /// `margin_percent` faster per item). The first probe comes after
    /// `explore_every` live batches.
    pub(crate) fn seed(&mut self, profile: &[(usize, Duration)]) {
        let mut seeded = false;
        for &(size, took) in profile {
            if size == 0 || size > self.max {
                continue;
            }
            let k = bucket(size);
            let b = &mut self.buckets[k];
            b.secs_per_item = took.as_secs_f64() / size as f64;
            b.samples = self.config.min_samples;
            seeded = true;
        }
        if !seeded {
            return;
        }
        let margin = 1.0 + f64::from(self.config.margin_percent) / 100.0;
        let mut best: Option<usize> = None;
        for k in 0..=self.top {
            let here = self.buckets[k];
            if here.samples == 0 {
                continue;
            }
            best = match best {
                Some(b) if here.secs_per_item * margin >= self.buckets[b].secs_per_item => Some(b),
                _ => Some(k),
            };
        }
        if let Some(k) = best {
            self.current = k;
        }
        self.settle();
    }

    /// The chosen cap, in `1..=max_batch_size`: what the measurements say
    /// is best (a probe forms a few batches under a neighbouring cap).
    pub(crate) fn chosen(&self) -> usize {
        top_of(self.current).min(self.max)
    }

    /// The cap batches are formed under now (the chosen one, or the probed
    /// one during a probe), in `1..=max_batch_size`.
    pub(crate) fn cap(&self) -> usize {
        let k = match self.phase {
            Phase::Settled => self.current,
            Phase::Probing(p) => p,
        };
        top_of(k).min(self.max)
    }

    /// `max_batch_size` changed.
    pub(crate) fn set_max(&mut self, max_batch_size: usize) {
        let max = max_batch_size.max(1);
        if max == self.max {
            return;
        }
        self.max = max;
        self.top = bucket(max);
        self.current = self.current.min(self.top);
        if matches!(self.phase, Phase::Probing(p) if p > self.top) {
            self.settle();
        }
    }

    /// A batch of `size` items succeeded in `took`.
    pub(crate) fn record(&mut self, size: usize, took: Duration) {
        if size == 0 {
            return;
        }
        let k = bucket(size);
        self.buckets[k].add(took.as_secs_f64() / size as f64);
        self.since = self.since.saturating_add(1);
        match self.phase {
            Phase::Settled => {
                let here = self.buckets[self.current];
                if k == self.current && here.samples >= self.config.min_samples {
                    match self.reference {
                        None => self.reference = Some(here.secs_per_item),
                        Some(r) if here.secs_per_item > r * CHANGE_FACTOR => {
                            self.remeasure();
                            return;
                        }
                        Some(_) => {}
                    }
                }
                if self.since >= self.config.explore_every {
                    self.start_probe();
                }
            }
            Phase::Probing(p) => {
                let min = self.config.min_samples;
                let (probed, here) = (self.buckets[p], self.buckets[self.current]);
                let hopeless = probed.samples >= ABORT_SAMPLES
                    && here.samples >= min
                    && probed.secs_per_item > here.secs_per_item * ABORT_FACTOR;
                if hopeless {
                    self.settle();
                } else if probed.samples >= min || self.since >= min.saturating_mul(PROBE_LIMIT) {
                    self.conclude(p);
                }
            }
        }
    }

    fn settle(&mut self) {
        self.phase = Phase::Settled;
        self.since = 0;
        self.reference = None;
    }

    /// The settled bucket got slower: measure it afresh, then probe.
    fn remeasure(&mut self) {
        self.buckets[self.current] = Bucket::default();
        self.settle();
        self.since = self
            .config
            .explore_every
            .saturating_sub(self.config.min_samples);
    }

    fn probe(&mut self, p: usize) {
        self.buckets[p] = Bucket::default();
        self.phase = Phase::Probing(p);
        self.since = 0;
    }

    fn start_probe(&mut self) {
        let up = (self.current < self.top).then_some(self.current + 1);
        let down = self.current.checked_sub(1);
        let choice = if self.up_next {
            up.or(down)
        } else {
            down.or(up)
        };
        self.up_next = !self.up_next;
        match choice {
            Some(p) => self.probe(p),
            None => self.settle(),
        }
    }

    fn conclude(&mut self, p: usize) {
        let c = self.current;
        let (probed, here) = (self.buckets[p], self.buckets[c]);
        let min = self.config.min_samples;
        let margin = 1.0 + f64::from(self.config.margin_percent) / 100.0;
        // Compared as seconds per item: a lower value is a higher throughput.
        let better = if probed.samples < min {
            false
        } else if here.samples < min {
            // The load does not reach the current cap but fills the smaller
            // bucket: shrinking loses nothing, and lets the search go on
            // from where batches really are.
            p < c
        } else if p > c {
            probed.secs_per_item * margin < here.secs_per_item
        } else {
            probed.secs_per_item < here.secs_per_item
        };
        if !better {
            self.settle();
            return;
        }
        self.current = p;
        let next = if p > c {
            (p < self.top).then_some(p + 1)
        } else {
            p.checked_sub(1)
        };
        match next {
            Some(q) => self.probe(q),
            None => self.settle(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Runs `batches` batches of a closed loop that always fills the cap.
    fn run(a: &mut Adaptive, batches: usize, cost: impl Fn(usize) -> f64) {
        run_with(a, batches, usize::MAX, cost);
    }

    /// Runs `batches` batches of a closed loop of `clients` callers.
    fn run_with(a: &mut Adaptive, batches: usize, clients: usize, cost: impl Fn(usize) -> f64) {
        for _ in 0..batches {
            let n = a.cap().min(clients);
            a.record(n, Duration::from_secs_f64(cost(n)));
        }
    }

    fn peak_at_8(n: usize) -> f64 {
        let n = n as f64;
        0.002 + 0.00025 * n.min(8.0) + 0.003 * (n - 8.0).max(0.0)
    }

    #[test]
    fn finds_the_peak_when_the_load_never_fills_the_max() {
        // Twelve callers never fill 32: the search goes on from 16.
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        run_with(&mut a, 2000, 12, peak_at_8);
        assert_eq!(a.chosen(), 8, "{a:?}");
        // Light load (single items) leaves the cap alone.
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        run_with(&mut a, 2000, 1, |_| 0.001);
        assert_eq!(a.chosen(), 32, "{a:?}");
        // Load that grows is followed back up when bigger is better.
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        let bigger_is_better = |n: usize| 0.005 + 0.0001 * n as f64;
        run_with(&mut a, 1000, 12, bigger_is_better);
        assert_eq!(a.chosen(), 16, "{a:?}");
        run_with(&mut a, 1000, 64, bigger_is_better);
        assert_eq!(a.chosen(), 32, "{a:?}");
    }

    #[test]
    fn noisy_service_times_still_settle_on_the_peak() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 64);
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut noise = move || {
            // xorshift: ±25 % multiplicative noise, deterministic.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            0.75 + (state % 1000) as f64 / 2000.0
        };
        let mut chosen = Vec::new();
        for _ in 0..4000 {
            let n = a.cap();
            a.record(n, Duration::from_secs_f64(peak_at_8(n) * noise()));
            chosen.push(a.chosen());
        }
        let settled = &chosen[1000..];
        let at_peak = settled.iter().filter(|&&c| c == 8).count();
        assert!(
            at_peak * 10 >= settled.len() * 9,
            "at 8 only {at_peak} of {} batches",
            settled.len()
        );
    }

    #[test]
    fn buckets_are_powers_of_two() {
        assert_eq!(bucket(1), 0);
        assert_eq!(bucket(2), 1);
        assert_eq!(bucket(3), 2);
        assert_eq!(bucket(4), 2);
        assert_eq!(bucket(5), 3);
        assert_eq!(bucket(8), 3);
        assert_eq!(bucket(9), 4);
        assert_eq!(bucket(usize::MAX), 64);
        assert_eq!(top_of(64), usize::MAX);
        assert_eq!(top_of(3), 8);
    }

    #[test]
    fn settles_on_the_peak_of_a_convex_curve() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 64);
        assert_eq!(a.cap(), 64);
        run(&mut a, 2000, peak_at_8);
        assert_eq!(a.current, 3);
        assert_eq!(a.cap(), 8);
    }

    #[test]
    fn follows_a_curve_that_changes() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        let bigger_is_better = |n: usize| 0.005 + 0.0001 * n as f64;
        run(&mut a, 1000, bigger_is_better);
        assert_eq!(a.cap(), 32);
        let best_at_4 = |n: usize| {
            let n = n as f64;
            0.001 + 0.00025 * n.min(4.0) + 0.004 * (n - 4.0).max(0.0)
        };
        run(&mut a, 80, best_at_4);
        assert_eq!(a.current, 2, "{a:?}");
    }

    #[test]
    fn zero_service_times_do_not_shrink_the_cap() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        run(&mut a, 1000, |_| 0.0);
        assert_eq!(a.current, bucket(32));
    }

    #[test]
    fn a_lower_max_clamps_the_cap_at_once() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        a.set_max(5);
        assert_eq!(a.cap(), 5);
        a.set_max(100);
        assert!(a.cap() <= 100);
    }

    #[test]
    fn invalid_settings_are_rejected() {
        for bad in [
            AdaptiveConfig {
                min_samples: 0,
                ..Default::default()
            },
            AdaptiveConfig {
                explore_every: 0,
                ..Default::default()
            },
            AdaptiveConfig {
                margin_percent: 101,
                ..Default::default()
            },
        ] {
            assert_eq!(
                bad.validate().unwrap_err().kind(),
                ConfigErrorKind::AdaptiveBatchSize
            );
        }
        AdaptiveConfig::default().validate().unwrap();
    }

    /// A profile of `cost` at the powers of two up to `max`.
    fn profile(max: usize, cost: impl Fn(usize) -> f64) -> Vec<(usize, Duration)> {
        std::iter::successors(Some(1usize), |n| Some(n * 2))
            .take_while(|&n| n <= max)
            .map(|n| (n, Duration::from_secs_f64(cost(n))))
            .collect()
    }

    #[test]
    fn a_profile_starts_the_cap_at_its_best_size() {
        // Seconds per batch measured on a 2-core CPU (YOLOv8n, ResNet-50,
        // MiniLM): fastest per item at 2, 4 and 16.
        let cases: [(&[f64], usize, usize); 3] = [
            (&[0.0806, 0.132, 0.300, 0.678], 8, 2),
            (&[0.059, 0.100, 0.185, 0.374, 1.0], 16, 4),
            (&[0.0068, 0.0115, 0.0166, 0.0245, 0.0392, 0.0801], 32, 16),
        ];
        for (secs, max, best) in cases {
            let mut a = Adaptive::new(AdaptiveConfig::default(), max);
            let p: Vec<_> = secs
                .iter()
                .enumerate()
                .map(|(i, &s)| (1usize << i, Duration::from_secs_f64(s)))
                .collect();
            a.seed(&p);
            assert_eq!((a.chosen(), a.cap()), (best, best), "{secs:?}: {a:?}");
        }
    }

    #[test]
    fn a_larger_size_must_be_faster_by_the_margin() {
        // 8 is 3 % faster per item than 4: under the 5 % margin.
        let mut a = Adaptive::new(AdaptiveConfig::default(), 8);
        a.seed(&[
            (1, Duration::from_millis(10)),
            (4, Duration::from_millis(20)),
            (8, Duration::from_micros(38_800)),
        ]);
        assert_eq!(a.chosen(), 4);
    }

    #[test]
    fn an_empty_or_oversized_profile_leaves_the_max() {
        let mut a = Adaptive::new(AdaptiveConfig::default(), 8);
        a.seed(&[]);
        assert_eq!(a.chosen(), 8);
        a.seed(&[
            (64, Duration::from_millis(1)),
            (0, Duration::from_millis(1)),
        ]);
        assert_eq!(a.chosen(), 8);
        // Sizes above the max are ignored, the others count.
        a.seed(&[(2, Duration::from_millis(1)), (64, Duration::from_nanos(1))]);
        assert_eq!(a.chosen(), 2);
    }

    #[test]
    fn live_batches_correct_a_wrong_profile() {
        // The profile says 2; the model really peaks at 8 (the machine was
        // busy while it was measured).
        let mut a = Adaptive::new(AdaptiveConfig::default(), 32);
        a.seed(&profile(32, |n| 0.01 * n as f64 / (n.min(2) as f64)));
        assert_eq!(a.chosen(), 2);
        run(&mut a, 2000, peak_at_8);
        assert_eq!(a.chosen(), 8, "{a:?}");
    }

    proptest! {
        #[test]
        fn a_profile_starts_at_a_measured_size_no_slower_than_the_others(
            costs in proptest::collection::vec(1u64..1_000_000, 1..8),
            max in 1usize..200,
        ) {
            let p: Vec<_> = costs
                .iter()
                .enumerate()
                .map(|(i, &us)| (1usize << i, Duration::from_micros(us)))
                .collect();
            let mut a = Adaptive::new(AdaptiveConfig::default(), max);
            a.seed(&p);
            let chosen = a.chosen();
            prop_assert!((1..=max).contains(&chosen));
            let per_item = |n: usize, d: Duration| d.as_secs_f64() / n as f64;
            let measured: Vec<_> = p.iter().filter(|(n, _)| *n <= max).collect();
            if measured.is_empty() {
                prop_assert_eq!(chosen, max);
            } else {
                let (_, took) = measured.iter().find(|(n, _)| *n == chosen).expect("a measured size");
                let here = per_item(chosen, *took);
                // No measured size is faster per item by the margin or more.
                let margin = 1.0 + 5.0 / 100.0;
                for &&(n, d) in &measured {
                    prop_assert!(per_item(n, d) * margin >= here, "{} beats {}", n, chosen);
                }
            }
        }

        #[test]
        fn the_cap_stays_within_one_and_the_max(
            max in 1usize..300,
            costs in proptest::collection::vec(0u64..50_000, 1..400),
            sizes in proptest::collection::vec(1usize..400, 1..400),
            new_max in proptest::option::of(1usize..300),
        ) {
            let mut a = Adaptive::new(AdaptiveConfig { min_samples: 2, explore_every: 3, margin_percent: 5 }, max);
            let mut max = max;
            for (i, (&c, &s)) in costs.iter().zip(sizes.iter().cycle()).enumerate() {
                if i == costs.len() / 2 {
                    if let Some(m) = new_max {
                        max = m;
                        a.set_max(m);
                    }
                }
                let n = s.min(a.cap());
                a.record(n, Duration::from_micros(c));
                prop_assert!((1..=max).contains(&a.cap()), "cap {} max {}", a.cap(), max);
                prop_assert!((1..=max).contains(&a.chosen()), "chosen {} max {}", a.chosen(), max);
            }
        }
    }
}
