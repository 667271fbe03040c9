//! Items 8-10: failure isolation, runtime control, observability.

mod support;

use std::convert::Infallible;
use std::time::Duration;

use convoy_batcher::{
    batch_fn, metric_names, BatchConfig, BatchFailed, BatchLayer, BatchPanicked, Closed,
};
use support::*;
use tokio_test::{assert_pending, assert_ready};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

#[derive(Debug)]
struct Odd(u32);

impl std::fmt::Display for Odd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} is odd", self.0)
    }
}

impl std::error::Error for Odd {}

#[tokio::test]
async fn per_item_errors_stay_with_their_item() {
    let config = BatchConfig::builder().max_batch_size(8).build().unwrap();
    let svc = BatchLayer::<u32, u32>::new(config).layer(service_fn(|xs: Vec<u32>| async move {
        Ok::<_, Infallible>(
            xs.into_iter()
                .map(|x| if x % 2 == 0 { Ok(x) } else { Err(Odd(x)) })
                .collect::<Vec<_>>(),
        )
    }));
    let results = futures::future::join_all((0..6).map(|i| svc.clone().oneshot(i))).await;
    for (i, r) in results.into_iter().enumerate() {
        match r {
            Ok(x) => assert_eq!(x, i as u32),
            Err(e) => {
                assert_eq!(i % 2, 1);
                assert_eq!(e.downcast_ref::<Odd>().unwrap().0, i as u32);
            }
        }
    }
}

#[tokio::test(start_paused = true)]
async fn a_batch_error_reaches_only_that_batch() {
    let config = BatchConfig::builder().max_batch_size(2).build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (_, s1) = next_batch(&mut handle).unwrap();
    let mut b = call(&mut svc, 2);
    s1.send_error(Odd(1));
    assert_pending!(drive(&mut worker));
    let err = answer(&mut a).unwrap_err();
    let failed = err.downcast_ref::<BatchFailed>().expect("BatchFailed");
    assert!(std::error::Error::source(failed)
        .unwrap()
        .to_string()
        .contains("odd"));
    let (b2, s2) = next_batch(&mut handle).unwrap();
    echo(b2, s2);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut b).unwrap(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_length_response_is_an_error_not_a_panic() {
    let config = BatchConfig::builder().build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let mut a = call(&mut svc, 1);
    let mut b = call(&mut svc, 2);
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (_, s) = next_batch(&mut handle).unwrap();
    s.send_response(vec![1]);
    assert_pending!(drive(&mut worker));
    for f in [&mut a, &mut b] {
        let err = answer(f).unwrap_err();
        assert!(err.is::<BatchFailed>(), "{err}");
        assert!(err.to_string().contains("1 results for 2 items"), "{err}");
    }
}

#[tokio::test]
async fn a_panicking_batch_fails_alone_and_the_worker_carries_on() {
    let config = BatchConfig::builder().max_batch_size(1).build().unwrap();
    let svc = batch_fn(config, |xs: Vec<u32>| async move {
        if xs[0] == 13 {
            panic!("unlucky batch");
        }
        Ok::<_, Infallible>(xs)
    });
    let err = svc.clone().oneshot(13).await.unwrap_err();
    let panicked = err.downcast_ref::<BatchPanicked>().expect("BatchPanicked");
    assert_eq!(panicked.message(), Some("unlucky batch"));
    assert_eq!(svc.clone().oneshot(7).await.unwrap(), 7);
}

#[tokio::test]
async fn a_panic_in_call_itself_is_contained_too() {
    let config = BatchConfig::builder().max_batch_size(1).build().unwrap();
    let svc = BatchLayer::<u32, u32>::new(config).layer(service_fn(|xs: Vec<u32>| {
        assert_ne!(xs[0], 13, "synchronous panic");
        std::future::ready(Ok::<_, Infallible>(xs))
    }));
    let err = svc.clone().oneshot(13).await.unwrap_err();
    assert!(err.is::<BatchPanicked>(), "{err}");
    assert_eq!(svc.clone().oneshot(8).await.unwrap(), 8);
}

#[tokio::test(start_paused = true)]
async fn a_failing_service_fails_what_is_queued_and_closes() {
    let config = BatchConfig::builder().build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let mut a = call(&mut svc, 1);
    handle.send_error(Odd(9));
    assert_ready!(drive(&mut worker));
    assert!(answer(&mut a).unwrap_err().is::<BatchFailed>());
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(assert_ready!(ready.poll()).unwrap_err().is::<Closed>());
}

#[tokio::test(start_paused = true)]
async fn settings_change_live() {
    let config = BatchConfig::builder()
        .max_batch_size(2)
        .queue_capacity(4)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let control = svc.handle();
    handle.allow(0);
    let _calls: Vec<_> = (1..=4).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));

    control.set_max_batch_size(3).unwrap();
    assert!(control.set_max_batch_size(0).is_err());
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    assert_eq!(b, vec![1, 2, 3]);
    echo(b, s);

    // Shrink the queue below what is in use: nothing is dropped, new work
    // waits until the queue drains below the new size.
    control.set_queue_capacity(1).unwrap();
    assert_eq!(control.stats().queue_capacity, 1);
    let mut other = svc.clone();
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| other.poll_ready(cx)));
    assert_pending!(ready.poll());
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![4]);
    assert_ready!(ready.poll()).unwrap();
    drop(ready);

    control.set_max_wait(Duration::from_millis(3));
    let _x = call(&mut other, 5);
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    assert!(
        next_batch(&mut handle).is_none(),
        "now waits for a fuller batch"
    );
    tokio::time::advance(Duration::from_millis(3)).await;
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![5]);
}

#[tokio::test(start_paused = true)]
async fn close_stops_admission_and_drains_the_queue() {
    let config = BatchConfig::builder().build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let mut queued = call(&mut svc, 1);
    svc.handle().close();
    assert!(svc.handle().is_closed());
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(assert_ready!(ready.poll()).unwrap_err().is::<Closed>());
    drop(ready);
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    echo(b, s);
    assert_ready!(drive(&mut worker));
    assert_eq!(answer(&mut queued).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn stats_report_load_and_recent_batches() {
    let config = BatchConfig::builder()
        .name("stats")
        .max_batch_size(3)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let _calls: Vec<_> = (1..=5).map(|i| call(&mut svc, i)).collect();
    let stats = svc.handle().stats();
    assert_eq!(stats.name, "stats");
    assert_eq!(stats.queue_depth, 5);
    assert_eq!(stats.admitted_total, 5);
    tokio::time::advance(Duration::from_millis(2)).await;
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    let stats = svc.handle().stats();
    assert_eq!(stats.queue_depth, 2);
    assert_eq!(stats.in_flight_batches, 1);
    assert_eq!(stats.in_flight_items, 3);
    assert_eq!(stats.ongoing_requests(), 5);
    assert_eq!(stats.batch_size.max, 3.0);
    assert!(
        (stats.queue_wait_seconds.p50 - 0.002).abs() < 1e-6,
        "{stats:?}"
    );
    tokio::time::advance(Duration::from_millis(4)).await;
    echo(b, s);
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    tokio::time::advance(Duration::from_millis(3)).await;
    echo(b, s);
    assert_pending!(drive(&mut worker));
    let stats = svc.handle().stats();
    assert_eq!(stats.completed_total, 5);
    assert_eq!(stats.batches_total, 2);
    assert_eq!(stats.in_flight_batches, 0);
    let sizes: Vec<_> = stats.service_time.iter().map(|s| s.batch_size).collect();
    assert_eq!(sizes, vec![2, 3]);
    // 3 items took 4 ms, 2 items took 3 ms: 1 ms fixed + 1 ms per item.
    let fit = stats.service_time_fit.expect("two sizes seen");
    assert!((fit.fixed_seconds - 0.001).abs() < 1e-6, "{fit:?}");
    assert!((fit.per_item_seconds - 0.001).abs() < 1e-6, "{fit:?}");
    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["completed_total"], 5);
}

#[test]
fn metrics_are_recorded_under_their_documented_names() {
    use metrics_util::debugging::DebuggingRecorder;
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let config = BatchConfig::builder().name("m").build().unwrap();
            let svc = batch_fn(config, |xs: Vec<u32>| async move { Ok::<_, BoxError>(xs) });
            for i in 0..3 {
                svc.clone().oneshot(i).await.unwrap();
            }
        });
    });
    let names: Vec<(String, Vec<String>)> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .map(|(key, _, _, _)| {
            let key = key.key();
            (
                key.name().to_owned(),
                key.labels()
                    .map(|l| format!("{}={}", l.key(), l.value()))
                    .collect(),
            )
        })
        .collect();
    for name in [
        metric_names::BATCH_SIZE,
        metric_names::QUEUE_WAIT_SECONDS,
        metric_names::BATCH_SERVICE_SECONDS,
        metric_names::QUEUE_DEPTH,
        metric_names::BATCHES_TOTAL,
    ] {
        let found = names.iter().find(|(n, _)| n == name);
        let (_, labels) = found.unwrap_or_else(|| panic!("{name} missing in {names:?}"));
        assert!(
            labels.contains(&"batcher=m".to_owned()),
            "{name}: {labels:?}"
        );
    }
}
