//! Invariants of the tests on arbitrary samples.

use convoy_drift::stats::{
    chisquare, counts, jensen_shannon, ks_2samp, wasserstein_distance, z_test, ColumnValues,
};
use proptest::prelude::*;

fn sample() -> impl Strategy<Value = Vec<f64>> {
    prop::collection::vec(-1e3f64..1e3, 1..120)
}

fn labels() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c", "d"]), 1..150)
        .prop_map(|v| v.into_iter().map(String::from).collect())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn ks_is_symmetric_and_a_probability(a in sample(), b in sample()) {
        let (x, y) = (ks_2samp(&a, &b), ks_2samp(&b, &a));
        prop_assert!((0.0..=1.0).contains(&x.p_value), "{x:?}");
        prop_assert!((0.0..=1.0).contains(&x.statistic));
        prop_assert_eq!(x.statistic, y.statistic);
        prop_assert!((x.p_value - y.p_value).abs() < 1e-12);
        prop_assert_eq!(ks_2samp(&a, &a).p_value, 1.0);
    }

    #[test]
    fn wasserstein_is_a_symmetric_distance_within_the_range(a in sample(), b in sample()) {
        let d = wasserstein_distance(&a, &b);
        prop_assert!(d >= 0.0);
        prop_assert!((d - wasserstein_distance(&b, &a)).abs() <= 1e-9 * d.max(1.0));
        let lo = a.iter().chain(&b).copied().fold(f64::INFINITY, f64::min);
        let hi = a.iter().chain(&b).copied().fold(f64::NEG_INFINITY, f64::max);
        prop_assert!(d <= hi - lo + 1e-9);
        prop_assert_eq!(wasserstein_distance(&a, &a), 0.0);
    }

    #[test]
    fn label_tests_are_bounded(a in labels(), b in labels()) {
        let (r, c) = (ColumnValues::Categorical(a), ColumnValues::Categorical(b));
        let p = chisquare(&counts(&r, &c));
        prop_assert!((0.0..=1.0).contains(&p), "{p}");
        let z = z_test(&r, &c);
        prop_assert!(z.is_nan() || (0.0..=1.0 + 1e-12).contains(&z), "{z}");
        let js = jensen_shannon(&r, &c);
        // The natural-log Jensen-Shannon distance is at most sqrt(ln 2).
        prop_assert!((0.0..=std::f64::consts::LN_2.sqrt() + 1e-12).contains(&js), "{js}");
        prop_assert!(jensen_shannon(&r, &r) < 1e-7);
    }
}
