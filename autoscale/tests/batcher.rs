//! The convoy-batcher adapter feeds load samples and the batch cost curve.
#![cfg(feature = "batcher")]

use std::time::Duration;

use convoy_autoscale::{
    BatcherSource, Policy, PolicyInput, QueueModel, QueueModelConfig, SignalSource, Window,
};
use convoy_batcher::{batch_fn, BatchConfig};
use futures::stream::{FuturesUnordered, StreamExt};
use tower::{BoxError, Service, ServiceExt};

#[tokio::test(start_paused = true)]
async fn batcher_stats_become_samples_and_a_cost_curve() {
    // Batches cost 10 ms + 1 ms per item.
    let config = BatchConfig::builder().max_batch_size(16).build().unwrap();
    let mut svc = batch_fn(config, |items: Vec<u32>| async move {
        tokio::time::sleep(Duration::from_millis(10 + items.len() as u64)).await;
        Ok::<_, BoxError>(items)
    });
    let mut source = BatcherSource::new(svc.handle());
    let mut window = Window::new(Duration::from_secs(600));
    let first = source.sample(Duration::ZERO).unwrap();
    assert_eq!((first.arrivals, first.batches), (0, 0));
    window.push(Duration::ZERO, first);

    // Waves of different sizes so the fit sees several batch sizes.
    for (i, wave) in [1usize, 3, 9, 16, 2, 12].into_iter().enumerate() {
        let pending = FuturesUnordered::new();
        for x in 0..wave as u32 {
            let ready = svc.ready().await.unwrap();
            pending.push(ready.call(x));
        }
        let done: Vec<_> = pending.collect().await;
        assert!(done.iter().all(|r| r.is_ok()));
        let now = Duration::from_secs(i as u64 + 1);
        let sample = source.sample(now).unwrap();
        assert_eq!(sample.arrivals, wave as u64);
        assert_eq!(sample.completions, wave as u64);
        assert!(sample.batches >= 1);
        assert!(sample.is_valid());
        window.push(now, sample);
    }
    let cost = window
        .batch_cost(Duration::from_secs(6), Duration::from_secs(60))
        .unwrap();
    // The curve is positive and grows with the batch.
    assert!(cost.seconds(16.0) > cost.seconds(1.0), "{cost:?}");
    assert!(cost.seconds(1.0) > 0.005, "{cost:?}");

    // QueueModel can act on it.
    let mut policy = QueueModel::new(QueueModelConfig::default()).unwrap();
    let rec = policy.decide(&PolicyInput::new(Duration::from_secs(6), 1, 1, &window));
    assert_ne!(rec.reason.kind(), "no_cost_model");
}

#[tokio::test(start_paused = true)]
async fn a_replica_set_of_batchers_reports_through_one_layered_source() {
    use convoy_autoscale::{
        BatcherSet, Layered, LoadObserver, ReplicaSet, ReplicaSetConfig, Scaler,
    };
    use tower::balance::p2c::Balance;
    use tower::util::BoxCloneService;
    use tower::ServiceBuilder;

    // Each replica is a batcher (10 ms + 1 ms per item) registered in the set.
    let batchers = BatcherSet::new();
    let registry = batchers.clone();
    let set = ReplicaSet::new(ReplicaSetConfig::default(), move || {
        let config = BatchConfig::builder().max_batch_size(8).build().unwrap();
        let replica = batch_fn(config, |items: Vec<u32>| async move {
            tokio::time::sleep(Duration::from_millis(10 + items.len() as u64)).await;
            Ok::<_, BoxError>(items)
        });
        registry.add(replica.handle());
        async move { Ok::<_, BoxError>(replica) }
    })
    .unwrap();
    set.scale_to(3).await.unwrap();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert_eq!(batchers.len(), 3);

    let observer = LoadObserver::new();
    let deployment: BoxCloneService<u32, u32, BoxError> = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(observer.layer())
            .buffer(1024)
            .service(Balance::new(set.discover())),
    );
    let mut source = Layered::new(observer.clone(), batchers.clone());
    let _ = source.sample(Duration::ZERO);

    // 300 requests in waves, over the three replicas.
    let mut window = Window::new(Duration::from_secs(600));
    for (i, wave) in [10u32, 40, 80, 20, 60, 90].into_iter().enumerate() {
        let calls: FuturesUnordered<_> = (0..wave).map(|x| deployment.clone().oneshot(x)).collect();
        let done: Vec<_> = calls.collect().await;
        assert!(done.iter().all(|r| r.is_ok()));
        let now = Duration::from_secs(i as u64 + 1);
        let s = source.sample(now).unwrap();
        // Front-door counts once (not once per layer), latency from the
        // front, batch statistics from all three batchers.
        assert_eq!(
            (s.arrivals, s.completions),
            (u64::from(wave), u64::from(wave))
        );
        assert!(s.latency_p99.unwrap() >= Duration::from_millis(11), "{s:?}");
        // (batch_items is batches × the batchers' recent mean batch size.)
        assert!(s.batches >= u64::from(wave).div_ceil(8), "{s:?}");
        assert!(s.batch_items > 0, "{s:?}");
        assert_eq!(s.replicas_reporting, Some(3));
        window.push(now, s);
    }
    let cost = window
        .batch_cost(Duration::from_secs(6), Duration::from_secs(60))
        .unwrap();
    assert!(cost.seconds(8.0) > cost.seconds(1.0), "{cost:?}");

    // A removed replica's batcher leaves the set once its worker ends (the
    // balancer lets go of it at its next request).
    set.scale_to(1).await.unwrap();
    deployment.clone().oneshot(1).await.unwrap();
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    let _ = source.sample(Duration::from_secs(7));
    assert_eq!(batchers.len(), 1, "{batchers:?}");
}

#[tokio::test(start_paused = true)]
async fn running_is_the_exact_count_of_items_in_running_batches() {
    // A batch of 8, then a batch of 2 that stays running: the mean batch
    // size is 5, but exactly 2 requests are running.
    let config = BatchConfig::builder()
        .max_batch_size(8)
        .max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let svc = batch_fn(config, |items: Vec<u32>| async move {
        let hold = if items.len() == 2 { 3_600 } else { 0 };
        tokio::time::sleep(Duration::from_secs(hold)).await;
        Ok::<_, BoxError>(items)
    });
    let handle = svc.handle();
    let first: FuturesUnordered<_> = (0..8u32).map(|x| svc.clone().oneshot(x)).collect();
    assert!(first.collect::<Vec<_>>().await.iter().all(|r| r.is_ok()));
    let second: Vec<_> = (0..2u32)
        .map(|x| tokio::spawn(svc.clone().oneshot(x)))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let stats = handle.stats();
    assert_eq!((stats.in_flight_batches, stats.in_flight_items), (1, 2));
    let sample = BatcherSource::new(handle).sample(Duration::ZERO).unwrap();
    assert_eq!(sample.running, 2.0, "{sample:?}");
    assert_eq!(sample.ongoing, 2.0, "{sample:?}");
    for call in second {
        call.abort();
    }
}
