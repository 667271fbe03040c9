//! Unit tests of samples and the window.

use std::time::Duration;

use super::*;

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

#[test]
fn mean_is_time_weighted_over_each_sample_interval() {
    let mut w = Window::new(s(60));
    assert!(w.push(s(0), LoadSample::ongoing(100.0)));
    assert!(w.push(s(1), LoadSample::ongoing(1.0)));
    assert!(w.push(s(2), LoadSample::ongoing(1.0)));
    assert!(w.push(s(4), LoadSample::ongoing(4.0)));
    // The first sample has no interval; the others weigh 1, 1 and 2 seconds.
    assert_eq!(w.mean(s(4), s(10), Signal::Ongoing), Some(2.5));
    // A one-second look-back sees only the last second of the last sample.
    assert_eq!(w.mean(s(4), s(1), Signal::Ongoing), Some(4.0));
    assert_eq!(w.max(s(4), s(10), Signal::Ongoing), Some(100.0));
}

#[test]
fn lookback_without_samples_is_missing() {
    let mut w = Window::new(s(60));
    assert_eq!(w.mean(s(10), s(5), Signal::Ongoing), None);
    w.push(s(1), LoadSample::ongoing(3.0));
    // The only sample is older than the look-back: missing, not stale-but-used.
    assert_eq!(w.mean(s(30), s(5), Signal::Ongoing), None);
    assert_eq!(w.mean(s(30), s(40), Signal::Ongoing), Some(3.0));
    // Latency signals absent from every sample are missing too.
    assert_eq!(w.mean(s(1), s(5), Signal::LatencyP99), None);
}

#[test]
fn invalid_and_backwards_samples_are_rejected() {
    let mut w = Window::new(s(60));
    assert!(!w.push(s(1), LoadSample::ongoing(f64::NAN)));
    assert!(!w.push(s(1), LoadSample::ongoing(-1.0)));
    assert!(!w.push(s(1), LoadSample::ongoing(f64::INFINITY)));
    assert!(w.push(s(5), LoadSample::ongoing(1.0)));
    assert!(!w.push(s(4), LoadSample::ongoing(1.0)));
    assert_eq!(w.rejected(), 4);
    assert_eq!(w.len(), 1);
}

#[test]
fn same_time_samples_merge_counters() {
    let mut w = Window::new(s(60));
    w.push(s(0), LoadSample::default());
    w.push(
        s(1),
        LoadSample {
            arrivals: 3,
            ..LoadSample::ongoing(1.0)
        },
    );
    w.push(
        s(1),
        LoadSample {
            arrivals: 4,
            ..LoadSample::ongoing(2.0)
        },
    );
    assert_eq!(w.len(), 2);
    assert_eq!(w.latest().unwrap().1.arrivals, 7);
    assert_eq!(w.latest().unwrap().1.ongoing, 2.0);
}

#[test]
fn rate_divides_counts_by_covered_time() {
    let mut w = Window::new(s(60));
    for t in 0..=20 {
        w.push(
            s(t),
            LoadSample {
                arrivals: 10,
                completions: 5,
                ..Default::default()
            },
        );
    }
    assert_eq!(w.rate(s(20), s(10), Counter::Arrivals), Some(10.0));
    assert_eq!(w.rate(s(20), s(10), Counter::Completions), Some(5.0));
    assert_eq!(w.rate(s(100), s(10), Counter::Arrivals), None);
}

#[test]
fn percentile_is_weighted() {
    let mut w = Window::new(s(100));
    w.push(s(0), LoadSample::default());
    for t in 1..=100 {
        w.push(s(t), LoadSample::ongoing(t as f64));
    }
    let p50 = w.percentile(s(100), s(100), Signal::Ongoing, 0.5).unwrap();
    let p99 = w.percentile(s(100), s(100), Signal::Ongoing, 0.99).unwrap();
    assert_eq!(p50, 50.0);
    assert_eq!(p99, 99.0);
    assert_eq!(
        w.percentile(s(100), s(100), Signal::Ongoing, f64::NAN),
        Some(100.0)
    );
}

#[test]
fn batch_cost_is_learned_by_least_squares() {
    // cost(n) = 10 ms + 1 ms · n
    let cost = |n: u64| Duration::from_micros(10_000 + 1_000 * n);
    let mut w = Window::new(s(60));
    w.push(s(0), LoadSample::default());
    for t in 1..=20u64 {
        let n = if t % 2 == 0 { 2 } else { 16 };
        w.push(
            s(t),
            LoadSample {
                batches: 10,
                batch_items: 10 * n,
                batch_busy: cost(n) * 10,
                ..Default::default()
            },
        );
    }
    let fit = w.batch_cost(s(20), s(30)).unwrap();
    assert!((fit.fixed.as_secs_f64() - 0.010).abs() < 1e-6, "{fit:?}");
    assert!((fit.per_item.as_secs_f64() - 0.001).abs() < 1e-6, "{fit:?}");
}

#[test]
fn batch_cost_from_one_size_is_proportional() {
    let mut w = Window::new(s(60));
    w.push(s(0), LoadSample::default());
    w.push(
        s(1),
        LoadSample {
            batches: 4,
            batch_items: 32,
            batch_busy: Duration::from_millis(80),
            ..Default::default()
        },
    );
    let fit = w.batch_cost(s(1), s(10)).unwrap();
    assert_eq!(fit.fixed, Duration::ZERO);
    assert!((fit.seconds(8.0) - 0.020).abs() < 1e-9);
    assert_eq!(Window::new(s(1)).batch_cost(s(1), s(1)), None);
}

#[test]
fn memory_is_bounded_by_horizon_and_capacity() {
    let mut w = Window::with_capacity(s(3600), 100);
    for i in 0..10_000u64 {
        w.push(Duration::from_millis(i), LoadSample::ongoing(1.0));
    }
    assert_eq!(w.len(), 100);
    let mut w = Window::new(s(10));
    for t in 0..1000 {
        w.push(s(t), LoadSample::ongoing(1.0));
    }
    assert!(w.len() <= 12, "{}", w.len());
    assert_eq!(w.mean(s(999), s(10), Signal::Ongoing), Some(1.0));
}

#[test]
fn sum_merges_replica_samples() {
    let a = LoadSample {
        latency_p99: Some(Duration::from_millis(5)),
        arrivals: 2,
        ..LoadSample::ongoing(1.0)
    };
    let b = LoadSample {
        latency_p99: Some(Duration::from_millis(9)),
        arrivals: 3,
        ..LoadSample::ongoing(2.0)
    };
    let total = LoadSample::sum([&a, &b]).unwrap();
    assert_eq!(total.ongoing, 3.0);
    assert_eq!(total.arrivals, 5);
    assert_eq!(total.latency_p99, Some(Duration::from_millis(9)));
    assert_eq!(total.replicas_reporting, Some(2));
    assert_eq!(LoadSample::sum(std::iter::empty()), None);
}

#[test]
fn closures_are_sources() {
    let mut src = |now: Duration| Some(LoadSample::ongoing(now.as_secs_f64()));
    assert_eq!(SignalSource::sample(&mut src, s(3)).unwrap().ongoing, 3.0);
}
