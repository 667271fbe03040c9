use proptest::prelude::*;

use super::*;

fn table(weights: &[f64], sticky: Option<StickyStrategy>) -> Table<()> {
    let split: Arc<str> = "t".into();
    let entries = weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let name: Arc<str> = format!("b{i}").into();
            Entry {
                id: i as u64,
                stats: Arc::new(BackendStats::new(&split, &name)),
                name,
                weight: *w,
                service: Mutex::new(()),
            }
        })
        .collect();
    Table::build(1, entries, sticky).expect("valid weights")
}

/// Largest |count_i(n) - n·w_i/W| over every prefix n and backend i.
fn max_prefix_deviation(weights: &[f64], picks: impl Iterator<Item = usize>) -> f64 {
    let total: f64 = weights.iter().sum();
    let mut counts = vec![0u64; weights.len()];
    let mut worst = 0.0f64;
    for (n, pick) in picks.enumerate() {
        counts[pick] += 1;
        let n = (n + 1) as f64;
        for (c, w) in counts.iter().zip(weights) {
            worst = worst.max((*c as f64 - n * w / total).abs());
        }
    }
    worst
}

/// Share of the key space (all 65,536 buckets, so no sampling noise) that
/// maps to a different backend.
fn moved_share(before: &Table<()>, after: &Table<()>) -> f64 {
    let moved = (0..BUCKETS as u64)
        .filter(|b| {
            let h = b << 48;
            before.sticky(h, PickStrategy::SmoothRoundRobin)
                != after.sticky(h, PickStrategy::SmoothRoundRobin)
        })
        .count();
    moved as f64 / BUCKETS as f64
}

/// Total variation distance between two weight vectors (the least share of
/// keys any mapping must move).
fn weight_change(a: &[f64], b: &[f64]) -> f64 {
    let (ta, tb): (f64, f64) = (a.iter().sum(), b.iter().sum());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x / ta - y / tb).abs())
        .sum::<f64>()
        / 2.0
}

#[test]
fn canary_at_five_percent_is_exact_per_hundred() {
    let t = table(&[95.0, 5.0], None);
    for _ in 0..10 {
        let canary = (0..100)
            .filter(|_| t.pick(PickStrategy::SmoothRoundRobin) == 1)
            .count();
        assert_eq!(canary, 5);
    }
}

#[test]
fn zero_weight_is_never_picked() {
    let t = table(&[0.0, 3.0, 0.0, 1.0], Some(StickyStrategy::Rendezvous));
    for i in 0..10_000u64 {
        assert!(matches!(t.pick(PickStrategy::SmoothRoundRobin), 1 | 3));
        assert!(matches!(t.pick(PickStrategy::WeightedRandom), 1 | 3));
        assert!(matches!(
            t.sticky(key_hash(&i), PickStrategy::SmoothRoundRobin),
            1 | 3
        ));
    }
    let t = table(&[0.0, 1.0], Some(StickyStrategy::Intervals));
    for i in 0..10_000u64 {
        assert_eq!(t.sticky(key_hash(&i), PickStrategy::SmoothRoundRobin), 1);
    }
}

#[test]
fn fractional_weights_are_apportioned() {
    assert_eq!(integer_weights(&[90.0, 10.0]), vec![9, 1]);
    assert_eq!(integer_weights(&[0.5, 0.5]), vec![1, 1]);
    let w = integer_weights(&[1.0, 1.0, 1.0, 1e-9]);
    assert!(
        w[..3].iter().max().unwrap() - w[..3].iter().min().unwrap() <= 1,
        "{w:?}"
    );
    assert!(w[3] >= 1, "a positive weight keeps a slot");
}

#[test]
fn invalid_weights_are_rejected() {
    let split: Arc<str> = "t".into();
    for (weights, kind) in [
        (vec![], ConfigErrorKind::NoBackends),
        (vec![0.0, 0.0], ConfigErrorKind::AllWeightsZero),
        (vec![1.0, -1.0], ConfigErrorKind::InvalidWeight),
        (vec![1.0, f64::NAN], ConfigErrorKind::InvalidWeight),
        (vec![1.0, f64::INFINITY], ConfigErrorKind::InvalidWeight),
        (vec![f64::MAX, f64::MAX], ConfigErrorKind::AllWeightsZero),
    ] {
        let entries: Vec<Entry<()>> = weights
            .iter()
            .enumerate()
            .map(|(i, w)| {
                let name: Arc<str> = format!("b{i}").into();
                Entry {
                    id: i as u64,
                    stats: Arc::new(BackendStats::new(&split, &name)),
                    name,
                    weight: *w,
                    service: Mutex::new(()),
                }
            })
            .collect();
        let err = Table::build(1, entries, None).expect_err("must be rejected");
        assert_eq!(err.kind(), kind, "{weights:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Two backends (the canary case): within one request at every prefix.
    #[test]
    fn smooth_wrr_two_backends_within_one_request(a in 0u32..=1000, b in 1u32..=1000) {
        let weights = [f64::from(a), f64::from(b)];
        let t = table(&weights, None);
        let n = 3 * (a + b).min(2000) as usize;
        let dev = max_prefix_deviation(&weights, (0..n).map(|_| t.pick(PickStrategy::SmoothRoundRobin)));
        prop_assert!(dev < 1.0, "deviation {dev}");
    }

    /// N backends: nginx's sequence stays within 1.5 requests (measured
    /// worst case over random weights is about 1.05).
    #[test]
    fn smooth_wrr_n_backends_stays_close(weights in prop::collection::vec(0u32..=100, 2..=10)) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let weights: Vec<f64> = weights.into_iter().map(f64::from).collect();
        let t = table(&weights, None);
        let n = 2 * weights.iter().sum::<f64>() as usize;
        let dev = max_prefix_deviation(&weights, (0..n).map(|_| t.pick(PickStrategy::SmoothRoundRobin)));
        prop_assert!(dev < 1.5, "deviation {dev}");
    }

    /// Same weights, same mapping; two-version changes move at most the
    /// weight change (+1 %).
    #[test]
    fn sticky_intervals_move_minimal_share(a in 0u32..=100, b in 0u32..=100) {
        let before = [f64::from(100 - a), f64::from(a)];
        let after = [f64::from(100 - b), f64::from(b)];
        prop_assume!(before[0] + before[1] > 0.0);
        let t1 = table(&before, Some(StickyStrategy::Auto));
        let t1_again = table(&before, Some(StickyStrategy::Auto));
        let t2 = table(&after, Some(StickyStrategy::Auto));
        prop_assert_eq!(moved_share(&t1, &t1_again), 0.0);
        let moved = moved_share(&t1, &t2);
        prop_assert!(moved <= weight_change(&before, &after) + 0.01, "moved {moved}");
    }
}

proptest! {
    // Building a rendezvous table hashes 65,536 buckets per backend.
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// N versions, one weight changed: keys move only to or from that
    /// version and at most the weight change (+1 %).
    #[test]
    fn sticky_rendezvous_moves_minimal_share(
        weights in prop::collection::vec(1u32..=100, 3..=6),
        which in 0usize..6,
        new_weight in 0u32..=100,
    ) {
        let before: Vec<f64> = weights.iter().map(|w| f64::from(*w)).collect();
        let mut after = before.clone();
        let which = which % after.len();
        after[which] = f64::from(new_weight);
        let t1 = table(&before, Some(StickyStrategy::Auto));
        let t2 = table(&after, Some(StickyStrategy::Auto));
        prop_assert_eq!(moved_share(&t1, &table(&before, Some(StickyStrategy::Auto))), 0.0);
        let moved = moved_share(&t1, &t2);
        prop_assert!(moved <= weight_change(&before, &after) + 0.01, "moved {moved}");
        for k in 0..5_000u64 {
            let h = key_hash(&k);
            let (x, y) = (t1.sticky(h, PickStrategy::SmoothRoundRobin), t2.sticky(h, PickStrategy::SmoothRoundRobin));
            prop_assert!(x == y || x == which || y == which);
        }
    }
}

#[test]
fn sticky_shares_follow_weights() {
    let t = table(&[70.0, 20.0, 10.0], Some(StickyStrategy::Rendezvous));
    let mut counts = [0u32; 3];
    for k in 0..100_000u64 {
        counts[t.sticky(key_hash(&k), PickStrategy::SmoothRoundRobin)] += 1;
    }
    for (c, w) in counts.iter().zip([0.7, 0.2, 0.1]) {
        assert!((f64::from(*c) / 100_000.0 - w).abs() < 0.01, "{counts:?}");
    }
}
