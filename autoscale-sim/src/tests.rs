use std::time::Duration;

use proptest::prelude::*;

use super::*;
use convoy_autoscale::{LoadSample, ReplicaCounts};

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// Replays a fixed schedule of (time, replicas).
#[derive(Debug)]
struct Scripted {
    initial: u32,
    plan: Vec<(Duration, u32)>,
    samples: Vec<LoadSample>,
}

impl Controller for Scripted {
    fn name(&self) -> &str {
        "scripted"
    }
    fn interval(&self) -> Duration {
        secs(1)
    }
    fn initial_replicas(&self) -> u32 {
        self.initial
    }
    fn observe(&mut self, _now: Duration, sample: &LoadSample) {
        self.samples.push(*sample);
    }
    fn desired(&mut self, now: Duration, counts: ReplicaCounts) -> u32 {
        let current = counts.current;
        self.plan
            .iter()
            .rev()
            .find(|(at, _)| *at <= now)
            .map_or(current, |&(_, n)| n)
    }
}

fn sim() -> Simulation {
    Simulation::new(SimConfig::default()).unwrap()
}

fn assert_accounted(r: &Report) {
    assert_eq!(r.arrivals, r.served + r.dropped + r.unserved, "{r:?}");
    assert!(r.over_slo <= r.served);
    assert!(r.windows_over_slo <= r.windows);
}

#[test]
fn same_seed_same_report() {
    let trace = Trace::mmpp(Mmpp {
        base_rps: 100.0,
        burst_factor: 8.0,
        mean_calm: secs(120),
        mean_burst: secs(30),
        duration: secs(1200),
        seed: 3,
    })
    .unwrap();
    let a = sim().run(&trace, &mut FixedReplicas::new(2));
    let b = sim().run(&trace, &mut FixedReplicas::new(2));
    assert_eq!(a, b);
    let other = Simulation::new(SimConfig::builder().seed(2).build().unwrap()).unwrap();
    let c = other.run(&trace, &mut FixedReplicas::new(2));
    assert_ne!(
        a.arrivals, c.arrivals,
        "a different seed draws different arrivals"
    );
}

#[test]
fn arrivals_follow_the_trace_rate() {
    let trace = Trace::constant(500.0, secs(600)).unwrap();
    let r = sim().run(&trace, &mut FixedReplicas::new(5));
    let expected = trace.expected_arrivals();
    // Poisson: standard deviation sqrt(300 000) ≈ 548; allow 5 sigma.
    assert!(
        (r.arrivals as f64 - expected).abs() < 5.0 * expected.sqrt(),
        "{}",
        r.arrivals
    );
    assert_accounted(&r);
    assert_eq!(r.dropped + r.unserved, 0);
}

#[test]
fn light_load_is_served_in_one_item_batches() {
    // 1 rps: nearly every request finds the replica idle.
    let trace = Trace::constant(1.0, secs(600)).unwrap();
    let r = sim().run(&trace, &mut FixedReplicas::new(1));
    let cost = SimConfig::default().replica.batch_cost(1);
    let p50 = r.latency_p50.unwrap();
    assert!(p50.abs_diff(cost) < Duration::from_micros(300), "{p50:?}");
    // The rare request that finds the slot busy waits at most one batch.
    let p99 = r.latency_p99.unwrap();
    assert!(p99 < cost * 3, "{p99:?}");
    assert_eq!(r.over_slo, 0);
    assert_eq!(r.windows, 10);
    assert_eq!(r.windows_over_slo, 0);
    assert_eq!(r.replica_seconds, 600.0);
}

#[test]
fn overload_drops_and_violates() {
    let config = SimConfig::builder().queue_capacity(100).build().unwrap();
    let capacity = config.replica.capacity_rps(config.slo);
    let trace = Trace::constant(capacity * 3.0, secs(300)).unwrap();
    let r = Simulation::new(config)
        .unwrap()
        .run(&trace, &mut FixedReplicas::new(1));
    assert_accounted(&r);
    assert!(r.dropped > r.arrivals / 2, "{r:?}");
    assert_eq!(r.windows_over_slo, r.windows);
}

#[test]
fn zero_replicas_leave_requests_unserved() {
    let config = SimConfig::builder().drain(secs(10)).build().unwrap();
    let trace = Trace::constant(10.0, secs(60)).unwrap();
    let r = Simulation::new(config)
        .unwrap()
        .run(&trace, &mut FixedReplicas::new(0));
    assert_accounted(&r);
    assert_eq!(r.served, 0);
    assert_eq!(r.unserved, r.arrivals);
    assert_eq!(r.violating(), r.arrivals);
    assert_eq!(r.replica_seconds, 0.0);
}

#[test]
fn cold_start_delays_capacity_and_costs_replica_seconds() {
    let trace = Trace::constant(50.0, secs(300)).unwrap();
    let mut s = Scripted {
        initial: 0,
        plan: vec![(secs(1), 1)],
        samples: Vec::new(),
    };
    let r = sim().run(&trace, &mut s);
    assert_accounted(&r);
    assert_eq!(r.cold_starts, 1);
    // Started at 1 s, alive until the end.
    assert_eq!(r.replica_seconds, 299.0);
    // Nothing completes before the replica is ready at 31 s.
    assert!(s.samples[..30].iter().all(|x| x.completions == 0));
    assert!(s.samples[31].completions > 0);
    // The ~1500 requests queued during the cold start waited > SLO.
    assert!(r.over_slo > 1_000, "{}", r.over_slo);
    assert_eq!(r.dropped, 0);
}

#[test]
fn removal_is_graceful_and_flips_are_counted() {
    let trace = Trace::constant(100.0, secs(600)).unwrap();
    let mut s = Scripted {
        initial: 2,
        plan: vec![
            (secs(100), 4),
            (secs(200), 2),
            (secs(300), 3),
            (secs(400), 2),
        ],
        samples: Vec::new(),
    };
    let r = sim().run(&trace, &mut s);
    assert_accounted(&r);
    assert_eq!(r.cold_starts, 3);
    assert_eq!(r.direction_changes, 3);
    assert_eq!(r.peak_replicas, 4);
    // 2·600 + 2·100 + 1·100, give or take a draining batch.
    assert!(
        (r.replica_seconds - 1500.0).abs() < 1.0,
        "{}",
        r.replica_seconds
    );
}

#[test]
fn cancelled_cold_starts_stop_paying() {
    let trace = Trace::constant(10.0, secs(120)).unwrap();
    let mut s = Scripted {
        initial: 1,
        plan: vec![(secs(10), 5), (secs(20), 1)],
        samples: Vec::new(),
    };
    let r = sim().run(&trace, &mut s);
    assert_eq!(r.cold_starts, 4);
    assert_eq!(r.replica_seconds, 120.0 + 4.0 * 10.0);
}

#[test]
fn samples_report_the_interval() {
    let trace = Trace::constant(100.0, secs(120)).unwrap();
    let mut s = Scripted {
        initial: 1,
        plan: Vec::new(),
        samples: Vec::new(),
    };
    let r = sim().run(&trace, &mut s);
    let arrivals: u64 = s.samples.iter().map(|x| x.arrivals).sum();
    let completions: u64 = s.samples.iter().map(|x| x.completions).sum();
    assert_eq!(arrivals, r.arrivals);
    assert_eq!(completions, r.served);
    let busy = &s.samples[10];
    assert!(busy.latency_p50.unwrap() <= busy.latency_p90.unwrap());
    assert!(busy.latency_p90.unwrap() <= busy.latency_p99.unwrap());
    assert!(busy.queue_wait.unwrap() < busy.latency_p99.unwrap());
    assert!(busy.batch_items >= busy.batches);
    assert_eq!(busy.ongoing, busy.queued + busy.running);
    let cost = SimConfig::default().replica;
    let expected =
        cost.batch_overhead * busy.batches as u32 + cost.per_item * busy.batch_items as u32;
    assert_eq!(busy.batch_busy, expected);
}

#[test]
fn timeline_covers_the_trace() {
    let trace = Trace::step(50.0, 300.0, secs(300), secs(600)).unwrap();
    let r = sim().run(&trace, &mut FixedReplicas::new(3));
    assert_eq!(r.timeline.len(), 60);
    assert_eq!(r.timeline[0].at, secs(10));
    assert_eq!(r.timeline[59].at, secs(600));
    assert_eq!(r.timeline[10].trace_rps, 50.0);
    assert_eq!(r.timeline[40].trace_rps, 300.0);
    let late: f64 = r.timeline[40..].iter().map(|p| p.arrival_rps).sum::<f64>() / 20.0;
    assert!((late - 300.0).abs() < 20.0, "{late}");
}

#[test]
fn batches_grow_with_load() {
    let trace = Trace::constant(200.0, secs(60)).unwrap();
    let mut s = Scripted {
        initial: 2,
        plan: Vec::new(),
        samples: Vec::new(),
    };
    sim().run(&trace, &mut s);
    let b = s.samples[30].batch_items as f64 / s.samples[30].batches as f64;
    assert!(b > 2.0 && b <= 8.0, "{b}");
}

#[test]
fn oracle_is_below_every_fixed_deployment_that_meets_the_slo() {
    let trace = Trace::spike(Spike {
        base_rps: 100.0,
        magnitude: 4.0,
        start: secs(120),
        ramp: secs(60),
        hold: secs(180),
        duration: secs(600),
    })
    .unwrap();
    let mut met = 0;
    for n in 1..=8 {
        let r = sim().run(&trace, &mut FixedReplicas::new(n));
        if r.violating_fraction() < 0.01 {
            met += 1;
            assert!(r.oracle_ratio() >= 1.0, "{n}: {}", r.oracle_ratio());
        }
    }
    assert!(met > 0);
}

#[test]
fn oracle_provisions_one_cold_start_ahead() {
    let config = SimConfig::default();
    let cap = config.replica.capacity_rps(config.slo);
    let trace = Trace::step(cap * 0.5, cap * 1.5, secs(120), secs(240)).unwrap();
    let oracle = Oracle::plan(&trace, &config);
    assert_eq!(oracle.replicas_per_minute(), &[1, 1, 2, 2]);
    // The second replica starts 30 s before minute 2.
    assert_eq!(oracle.replica_seconds(), 240.0 + 150.0);
    assert_eq!(oracle.replicas_at(secs(130)), 2);
}

#[test]
fn capacity_model() {
    let m = ReplicaModel::default();
    assert_eq!(m.batch_cost(4), Duration::from_millis(40));
    assert_eq!(m.slo_batch_size(Duration::from_millis(250)), 8);
    assert_eq!(m.slo_batch_size(Duration::from_millis(100)), 6);
    assert_eq!(m.slo_batch_size(Duration::from_millis(1)), 1);
    let cap = m.capacity_rps(Duration::from_millis(250));
    assert!((cap - 8.0 / 0.06).abs() < 1e-9);
    let two = ReplicaModel { slots: 2, ..m };
    assert!((two.capacity_rps(Duration::from_millis(250)) - 2.0 * cap).abs() < 1e-9);
}

#[test]
fn bad_config_is_rejected() {
    let bad = |c: SimConfig| Simulation::new(c).unwrap_err().field();
    let mut c = SimConfig::default();
    c.replica.slots = 0;
    assert_eq!(bad(c), "replica.slots");
    let mut c = SimConfig::default();
    c.replica.max_batch_size = 0;
    assert_eq!(bad(c), "replica.max_batch_size");
    let mut c = SimConfig::default();
    c.replica.batch_overhead = Duration::ZERO;
    c.replica.per_item = Duration::ZERO;
    assert_eq!(bad(c), "replica.batch_overhead");
    let c = SimConfig {
        slo: Duration::ZERO,
        ..SimConfig::default()
    };
    assert_eq!(bad(c), "slo");
    let c = SimConfig {
        queue_capacity: 0,
        ..SimConfig::default()
    };
    assert_eq!(bad(c), "queue_capacity");
    let c = SimConfig {
        sample_interval: Duration::from_secs(7),
        ..SimConfig::default()
    };
    assert_eq!(bad(c), "sample_interval");
    let c = SimConfig {
        timeline_interval: Duration::from_millis(1500),
        ..SimConfig::default()
    };
    assert_eq!(bad(c), "timeline_interval");
    let err = SimConfig::builder()
        .slo(Duration::ZERO)
        .build()
        .unwrap_err();
    assert!(err.to_string().contains("slo"));
}

#[test]
fn config_serde_fills_defaults() {
    let json = r#"{"seed": 9, "replica": {"slots": 4}}"#;
    let c: SimConfig = serde_json::from_str(json).unwrap();
    assert_eq!(c.seed, 9);
    assert_eq!(c.replica.slots, 4);
    assert_eq!(c.replica.max_batch_size, 8);
    assert_eq!(c.slo, SimConfig::default().slo);
}

#[test]
fn trace_shapes() {
    let step = Trace::step(10.0, 50.0, secs(30), secs(60)).unwrap();
    assert_eq!(step.rates().len(), 60);
    assert_eq!(step.rate_at(secs(29)), 10.0);
    assert_eq!(step.rate_at(secs(30)), 50.0);
    assert_eq!(step.rate_at(secs(60)), 0.0);

    let ramp = Trace::ramp(0.0, 100.0, secs(10), secs(100), secs(200)).unwrap();
    assert_eq!(ramp.rate_at(secs(5)), 0.0);
    assert_eq!(ramp.rate_at(secs(60)), 50.5);
    assert_eq!(ramp.rate_at(secs(150)), 100.0);
    assert!(ramp.rates().windows(2).all(|w| w[0] <= w[1]));

    let spike = Trace::spike(Spike {
        base_rps: 100.0,
        magnitude: 10.0,
        start: secs(100),
        ramp: secs(10),
        hold: secs(50),
        duration: secs(300),
    })
    .unwrap();
    assert_eq!(spike.rate_at(secs(99)), 100.0);
    assert_eq!(spike.rate_at(secs(105)), 595.0);
    assert_eq!(spike.rate_at(secs(130)), 1000.0);
    assert!((spike.rate_at(secs(165)) - 505.0).abs() < 1e-9);
    assert_eq!(spike.rate_at(secs(200)), 100.0);
    assert_eq!(spike.peak_rps(), 1000.0);

    let day = Trace::diurnal(100.0, 0.8, secs(86_400), secs(86_400)).unwrap();
    assert!(day.rate_at(secs(0)) < 21.0);
    assert!(day.rate_at(secs(43_200)) > 179.0);
    let mean = day.expected_arrivals() / 86_400.0;
    assert!((mean - 100.0).abs() < 0.01, "{mean}");
}

#[test]
fn mmpp_switches_between_two_levels() {
    let mmpp = Mmpp {
        base_rps: 10.0,
        burst_factor: 10.0,
        mean_calm: secs(100),
        mean_burst: secs(20),
        duration: secs(36_000),
        seed: 11,
    };
    let trace = Trace::mmpp(mmpp).unwrap();
    assert_eq!(trace, Trace::mmpp(mmpp).unwrap());
    assert_ne!(trace, Trace::mmpp(Mmpp { seed: 12, ..mmpp }).unwrap());
    let rates = trace.rates();
    assert!(rates
        .iter()
        .all(|&r| (10.0 - 1e-9..=100.0 + 1e-9).contains(&r)));
    let burst = rates.iter().filter(|&&r| r > 99.0).count() as f64 / rates.len() as f64;
    // Stationary burst share 20 / 120 ≈ 0.17.
    assert!((0.10..0.25).contains(&burst), "{burst}");
    assert!(rates.iter().filter(|&&r| r > 11.0 && r < 99.0).count() > 10);
}

#[test]
fn csv_traces() {
    let t = Trace::from_csv(
        "csv",
        "minute,count\n# comment\n0,600\n\n1,1200\n",
        CsvResolution::PerMinute,
    )
    .unwrap();
    assert_eq!(t.rates(), &[10.0, 20.0]);
    assert_eq!(t.duration(), secs(120));
    let t = Trace::from_csv("csv", "5\n7\n", CsvResolution::PerSecond).unwrap();
    assert_eq!(t.rates(), &[5.0, 7.0]);

    let err = Trace::from_csv("csv", "1\n2\nx\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::Parse);
    assert_eq!(err.line(), Some(3));
    assert!(err.to_string().contains("line 3"));
    let err = Trace::from_csv("csv", "1\n-2\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::InvalidValue);
    assert_eq!(err.line(), Some(2));
    let err = Trace::from_csv("csv", "1\nNaN\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::InvalidValue);
    let err = Trace::from_csv("csv", "count\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::Empty);
    let err = Trace::from_csv("csv", "1e6\n1,\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::Parse);
}

#[test]
fn bad_trace_parameters_are_errors() {
    assert_eq!(
        Trace::constant(f64::NAN, secs(10)).unwrap_err().kind(),
        TraceErrorKind::InvalidValue
    );
    assert_eq!(
        Trace::constant(-1.0, secs(10)).unwrap_err().kind(),
        TraceErrorKind::InvalidValue
    );
    assert_eq!(
        Trace::constant(1.0, Duration::ZERO).unwrap_err().kind(),
        TraceErrorKind::Empty
    );
    assert_eq!(
        Trace::constant(1.0, secs(u64::MAX)).unwrap_err().kind(),
        TraceErrorKind::TooLong
    );
    assert_eq!(
        Trace::from_rates("x", Duration::ZERO, vec![1.0])
            .unwrap_err()
            .kind(),
        TraceErrorKind::ZeroStep
    );
    assert_eq!(
        Trace::from_rates("x", Duration::MAX, vec![1.0])
            .unwrap_err()
            .kind(),
        TraceErrorKind::TooLong
    );
    assert_eq!(
        Trace::from_rates("x", secs(1), vec![1e300])
            .unwrap_err()
            .kind(),
        TraceErrorKind::InvalidValue
    );
    let err = Trace::from_csv("csv", "1\n1e300\n", CsvResolution::PerSecond).unwrap_err();
    assert_eq!(err.kind(), TraceErrorKind::InvalidValue);
    assert_eq!(err.line(), Some(2));
    assert_eq!(
        Trace::diurnal(1.0, 1.5, secs(60), secs(60))
            .unwrap_err()
            .kind(),
        TraceErrorKind::InvalidValue
    );
    let m = Mmpp {
        base_rps: 1.0,
        burst_factor: 5.0,
        mean_calm: Duration::ZERO,
        mean_burst: secs(1),
        duration: secs(60),
        seed: 0,
    };
    assert_eq!(
        Trace::mmpp(m).unwrap_err().kind(),
        TraceErrorKind::InvalidValue
    );
}

#[test]
fn table_lists_every_report() {
    let trace = Trace::constant(100.0, secs(120)).unwrap().with_name("flat");
    let a = sim().run(&trace, &mut FixedReplicas::new(1));
    let b = sim().run(&trace, &mut FixedReplicas::new(2));
    let table = comparison_table(&[a, b]);
    assert_eq!(table.lines().count(), 4);
    assert!(table.contains("| flat | Fixed(1) |"));
    assert!(table.contains("| flat | Fixed(2) |"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn csv_input_never_panics(text in "[0-9a-z,.#eE+\\- \n]{0,200}") {
        if let Ok(t) = Trace::from_csv("p", &text, CsvResolution::PerMinute) {
            prop_assert!(!t.rates().is_empty());
            prop_assert!(t.rates().iter().all(|r| r.is_finite() && *r >= 0.0 && *r <= MAX_RATE));
        }
    }

    #[test]
    fn every_arrival_is_accounted_once(
        seed in any::<u64>(),
        rates in prop::collection::vec(0.0f64..600.0, 1..20),
        queue in 1usize..500,
        slots in 1u32..4,
        batch in 1u32..16,
        plan in prop::collection::vec((0u64..200, 0u32..6), 0..8),
    ) {
        let config = SimConfig::builder()
            .seed(seed)
            .queue_capacity(queue)
            .drain(secs(20))
            .replica(ReplicaModel { slots, max_batch_size: batch, ..ReplicaModel::default() })
            .build()
            .unwrap();
        let trace = Trace::from_rates("p", secs(10), rates).unwrap();
        let mut s = Scripted {
            initial: 1,
            plan: plan.into_iter().map(|(t, n)| (secs(t), n)).collect(),
            samples: Vec::new(),
        };
        let r = Simulation::new(config).unwrap().run(&trace, &mut s);
        prop_assert_eq!(r.arrivals, r.served + r.dropped + r.unserved);
        let completions: u64 = s.samples.iter().map(|x| x.completions).sum();
        prop_assert!(completions <= r.served);
        prop_assert!(r.over_slo <= r.served);
        prop_assert!(s.samples.iter().all(|x| x.queued <= queue as f64));
    }
}
