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
