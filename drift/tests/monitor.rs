//! The monitor end to end on paused time: windows close, the sample is
//! bounded, drift flips the report and back, the layer samples requests and
//! responses.

use std::sync::Arc;
use std::time::Duration;

use convoy_drift::stats::{ColumnKind, ColumnValues};
use convoy_drift::{
    reservoir_slot, DriftLayer, DriftSettings, Features, Monitor, Reference, ReferenceColumn, Row,
    Value,
};
use tower::{service_fn, Layer, ServiceExt};

fn settings(window: Duration, sample_size: usize) -> DriftSettings {
    let reference = Reference {
        columns: vec![
            ReferenceColumn {
                name: "x".into(),
                kind: ColumnKind::Numerical,
                values: ColumnValues::Numerical((0..500).map(|i| f64::from(i % 100)).collect()),
            },
            ReferenceColumn {
                name: "class".into(),
                kind: ColumnKind::Categorical,
                values: ColumnValues::Categorical(
                    (0..500)
                        .map(|i| ["a", "b", "c"][i % 3].to_string())
                        .collect(),
                ),
            },
        ],
    };
    DriftSettings {
        window,
        sample_size,
        min_samples: 30,
        drift_share: 0.5,
        per_column: vec![(None, None); 2],
        reference,
        webhook: None,
    }
}

fn row(i: u64, shift: f64, class: &'static str) -> Row {
    vec![
        Value::Num((i % 100) as f64 + shift),
        Value::Cat(Arc::from(class)),
    ]
}

fn class_of(i: u64) -> &'static str {
    ["a", "b", "c"][(i % 3) as usize]
}

/// Lets the background task drain its queue and close the window.
async fn close_window(window: Duration) {
    tokio::time::sleep(window).await;
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn drift_turns_on_and_off_with_the_inputs() {
    let window = Duration::from_secs(10);
    let monitor = Monitor::start("m", settings(window, 200));
    assert!(monitor.latest().is_none());

    for i in 0..1000 {
        monitor.observe(|| row(i, 0.0, class_of(i)));
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    close_window(window).await;
    let r = monitor.latest().expect("a window closed");
    assert!(r.tested);
    assert_eq!(r.window.index, 0);
    assert_eq!(r.window.requests, 1000);
    assert_eq!(
        r.window.sampled, 200,
        "the sample is bounded by sample_size"
    );
    assert!(!r.dataset_drift, "{r:?}");
    assert!(!monitor.drifted());

    // Shifted inputs and a new class: both columns drift.
    for i in 0..1000 {
        monitor.observe(|| row(i, 40.0, "z"));
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    assert_eq!(r.window.index, 1);
    assert!(r.dataset_drift && r.share == 1.0, "{r:?}");
    assert!(monitor.drifted());

    for i in 0..1000 {
        monitor.observe(|| row(i, 0.0, class_of(i)));
        if i % 100 == 0 {
            tokio::task::yield_now().await;
        }
    }
    close_window(window).await;
    assert!(!monitor.latest().unwrap().dataset_drift);
    assert!(!monitor.drifted());
}

#[tokio::test(start_paused = true)]
async fn a_window_with_too_few_rows_is_not_tested() {
    let window = Duration::from_secs(5);
    let monitor = Monitor::start("m", settings(window, 100));
    for i in 0..10 {
        monitor.observe(|| row(i, 90.0, "z"));
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    assert!(!r.tested && !r.dataset_drift && r.columns.is_empty());
    assert_eq!(r.window.sampled, 10);
}

struct Io;

impl Features<u64, String> for Io {
    fn inputs(&self, req: &u64, row: &mut Row) {
        row.push(Value::Num((*req % 100) as f64));
    }
    fn outputs(&self, resp: &String, row: &mut Row) {
        row.push(Value::Cat(Arc::from(resp.as_str())));
    }
}

#[tokio::test(start_paused = true)]
async fn the_layer_samples_inputs_and_outputs() {
    let window = Duration::from_secs(10);
    let monitor = Monitor::start("m", settings(window, 300));
    let svc = DriftLayer::new(monitor.clone(), Io).layer(service_fn(|x: u64| async move {
        Ok::<_, std::convert::Infallible>(class_of(x).to_string())
    }));
    for i in 0..600 {
        assert_eq!(svc.clone().oneshot(i).await.unwrap(), class_of(i));
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    assert_eq!((r.window.requests, r.window.sampled), (600, 300));
    assert!(
        r.columns
            .iter()
            .all(|c| c.error.is_none() && c.current_rows == 300),
        "{r:?}"
    );
    assert!(!r.dataset_drift);

    // The model starts answering one class only: the output column drifts.
    let svc = DriftLayer::new(monitor.clone(), Io).layer(service_fn(|_x: u64| async move {
        Ok::<_, std::convert::Infallible>("a".to_string())
    }));
    for i in 0..600 {
        svc.clone().oneshot(i).await.unwrap();
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    let class = r.columns.iter().find(|c| c.column == "class").unwrap();
    assert!(class.drifted, "{class:?}");
    assert!(r.dataset_drift);
}

/// Algorithm R with hashed draws keeps every index with probability k / n:
/// over many windows each index's inclusion count stays within 5 standard
/// deviations of the expectation.
#[test]
fn the_reservoir_is_uniform() {
    let (n, k, windows) = (2000u64, 100usize, 400u64);
    let mut kept_by_index = vec![0u32; n as usize];
    for epoch in 0..windows {
        let mut slots: Vec<Option<u64>> = vec![None; k];
        for i in 0..n {
            if let Some(s) = reservoir_slot(7, epoch, i, k) {
                slots[s] = Some(i);
            }
        }
        assert!(slots.iter().all(Option::is_some));
        for i in slots.into_iter().flatten() {
            kept_by_index[i as usize] += 1;
        }
    }
    let p = k as f64 / n as f64;
    let mean = windows as f64 * p;
    let sd = (windows as f64 * p * (1.0 - p)).sqrt();
    // Early, middle and late indices alike (bucketed by 200 to tighten the bound).
    for bucket in kept_by_index.chunks(200) {
        let got: f64 = bucket.iter().map(|&c| f64::from(c)).sum();
        let (m, s) = (mean * 200.0, sd * 200f64.sqrt());
        assert!(
            (got - m).abs() < 5.0 * s,
            "bucket kept {got}, expected {m} ± {s}"
        );
    }
}

/// A request that outlives its window lands in the next one instead of
/// being dropped at the boundary.
#[tokio::test(start_paused = true)]
async fn a_slow_request_is_kept_in_the_window_it_ends_in() {
    let window = Duration::from_secs(10);
    let monitor = Monitor::start("m", settings(window, 100));
    let tickets: Vec<_> = (0..50)
        .map(|_| monitor.ticket().expect("i < k is kept"))
        .collect();
    close_window(window).await;
    assert_eq!(monitor.latest().unwrap().window.sampled, 0);
    for (i, t) in tickets.into_iter().enumerate() {
        monitor.submit(t, row(i as u64, 0.0, class_of(i as u64)));
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    assert_eq!((r.window.index, r.window.sampled), (1, 50), "{r:?}");
    assert!(r.tested);
}

/// Under a flood the monitor's memory stays bounded: the queue to its task
/// holds at most `QUEUE` rows (the rest are dropped and counted, never
/// waited for), and a window keeps at most `sample_size` of them.
#[tokio::test(start_paused = true)]
async fn a_flood_is_bounded_by_the_queue_and_the_sample() {
    let window = Duration::from_secs(10);
    let monitor = Monitor::start("m", settings(window, 2000));
    // The background task cannot run while this loop holds the (current)
    // thread: every sampled row beyond the queue's capacity is dropped.
    for i in 0..200_000u64 {
        monitor.observe(|| row(i, 0.0, class_of(i)));
    }
    close_window(window).await;
    let r = monitor.latest().unwrap();
    assert_eq!(r.window.requests, 200_000);
    assert_eq!(r.window.sampled, convoy_drift::QUEUE, "{:?}", r.window);
    assert!(r.window.dropped > 1000, "{:?}", r.window);
    assert!(r.tested);
}
