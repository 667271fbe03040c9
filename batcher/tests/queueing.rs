//! Items 4-7: keyed batching, backpressure, deadlines, priorities,
//! cancellation.

mod support;

use std::time::Duration;

use convoy_batcher::{
    BatchConfig, BatchLayer, Closed, DeadlineExceeded, OverflowPolicy, Priority, QueueFull,
};
use support::*;
use tokio::time::Instant;
use tokio_test::{assert_pending, assert_ready};
use tower::Service;

#[tokio::test(start_paused = true)]
async fn only_equal_keys_share_a_batch_and_keys_take_turns() {
    let layer =
        BatchLayer::<u32, u32>::new(BatchConfig::builder().max_batch_size(2).build().unwrap())
            .key_fn(|x: &u32| u64::from(*x / 100));
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    // Key 0 floods first; key 1 and key 2 arrive later.
    let _calls: Vec<_> = [1, 2, 3, 4, 5, 6, 101, 102, 201]
        .iter()
        .map(|&i| call(&mut svc, i))
        .collect();
    let mut seen = Vec::new();
    loop {
        assert_pending!(drive(&mut worker));
        let Some((b, s)) = next_batch(&mut handle) else {
            break;
        };
        let key = b[0] / 100;
        assert!(b.iter().all(|x| x / 100 == key), "mixed keys: {b:?}");
        seen.push(b.clone());
        echo(b, s);
    }
    // Round-robin: keys 1 and 2 are served before key 0 is exhausted.
    assert_eq!(
        seen,
        vec![
            vec![1, 2],
            vec![101, 102],
            vec![201],
            vec![3, 4],
            vec![5, 6]
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn backpressure_reserves_capacity_in_poll_ready() {
    let config = BatchConfig::builder()
        .max_batch_size(2)
        .queue_capacity(2)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _a = call(&mut svc, 1);
    let _b = call(&mut svc, 2);
    // Full: poll_ready waits (load_shed turns this into an error).
    let mut other = svc.clone();
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| other.poll_ready(cx)));
    assert_pending!(ready.poll());
    // Dispatch frees the slots.
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1, 2]);
    assert!(ready.is_woken());
    assert!(matches!(ready.poll(), std::task::Poll::Ready(Ok(()))));
}

#[tokio::test(start_paused = true)]
async fn a_clone_does_not_inherit_a_reserved_slot() {
    let config = BatchConfig::builder().queue_capacity(1).build().unwrap();
    let (mut svc, _worker, _handle) = batcher(config);
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert_ready!(ready.poll()).unwrap();
    drop(ready);
    let mut clone = svc.clone();
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| clone.poll_ready(cx)));
    assert_pending!(ready.poll());
    drop(ready);
    // Dropping the handle that holds the slot gives it back.
    drop(svc);
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| clone.poll_ready(cx)));
    assert_ready!(ready.poll()).unwrap();
}

#[tokio::test(start_paused = true)]
async fn reject_policy_answers_queue_full() {
    let config = BatchConfig::builder()
        .queue_capacity(1)
        .overflow(OverflowPolicy::Reject)
        .build()
        .unwrap();
    let (mut svc, _worker, _handle) = batcher(config);
    let _a = call(&mut svc, 1);
    let mut b = call(&mut svc, 2);
    let err = assert_ready!(b.poll()).unwrap_err();
    assert!(err.is::<QueueFull>(), "{err}");
    assert_eq!(svc.handle().stats().rejected.queue_full, 1);
}

#[tokio::test(start_paused = true)]
async fn expired_items_are_answered_and_never_reach_the_service() {
    let config = BatchConfig::builder()
        .max_batch_size(4)
        .queue_timeout(Duration::from_millis(10))
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (b1, s1) = next_batch(&mut handle).unwrap();
    // The service is busy with batch 1 while these wait.
    let mut late = call(&mut svc, 2);
    tokio::time::advance(Duration::from_millis(5)).await;
    let mut fresh = call(&mut svc, 3);
    assert_pending!(drive(&mut worker));
    tokio::time::advance(Duration::from_millis(5)).await;
    // Item 2's deadline passed while queued: answered without waiting for
    // the service.
    assert_pending!(drive(&mut worker));
    let err = answer(&mut late).unwrap_err();
    assert!(err.is::<DeadlineExceeded>(), "{err}");
    assert_pending!(fresh.poll());

    echo(b1, s1);
    assert_pending!(drive(&mut worker));
    let (b2, s2) = next_batch(&mut handle).unwrap();
    assert_eq!(b2, vec![3], "the expired item never reaches the service");
    echo(b2, s2);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut fresh).unwrap(), 3);
    assert_eq!(svc.handle().stats().rejected.deadline_exceeded, 1);
}

#[tokio::test(start_paused = true)]
async fn a_per_request_deadline_comes_from_the_request() {
    let start = Instant::now();
    let layer = BatchLayer::<u32, u32>::new(BatchConfig::builder().build().unwrap())
        .deadline_fn(move |x: &u32| Some(start + Duration::from_millis(u64::from(*x))));
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    handle.allow(0);
    let mut short = call(&mut svc, 5);
    let mut long = call(&mut svc, 50);
    assert_pending!(drive(&mut worker));
    tokio::time::advance(Duration::from_millis(5)).await;
    assert_pending!(drive(&mut worker));
    assert!(answer(&mut short).unwrap_err().is::<DeadlineExceeded>());
    assert_pending!(long.poll());
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![50]);
}

#[tokio::test(start_paused = true)]
async fn higher_priority_dispatches_first() {
    let layer =
        BatchLayer::<u32, u32>::new(BatchConfig::builder().max_batch_size(2).build().unwrap())
            .priority_fn(|x: &u32| match x % 10 {
                0 => Priority::High,
                9 => Priority::Low,
                _ => Priority::Normal,
            });
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    handle.allow(0);
    let _calls: Vec<_> = [19, 1, 2, 10, 3, 20]
        .iter()
        .map(|&i| call(&mut svc, i))
        .collect();
    assert_pending!(drive(&mut worker));
    let mut order = Vec::new();
    for _ in 0..3 {
        handle.allow(1);
        assert_pending!(drive(&mut worker));
        let (b, s) = next_batch(&mut handle).unwrap();
        order.push(b.clone());
        echo(b, s);
        assert_pending!(drive(&mut worker));
    }
    assert_eq!(order, vec![vec![10, 20], vec![1, 2], vec![3, 19]]);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_caller_is_skipped_before_dispatch() {
    let config = BatchConfig::builder().max_batch_size(4).build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let a = call(&mut svc, 1);
    let _b = call(&mut svc, 2);
    assert_pending!(drive(&mut worker));
    drop(a);
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![2]);
    assert_eq!(svc.handle().stats().cancelled_total, 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_worker_answers_everyone_closed() {
    let config = BatchConfig::builder().build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let mut queued = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let mut not_yet_taken = call(&mut svc, 2);
    drop(worker);
    assert!(answer(&mut queued).unwrap_err().is::<Closed>());
    assert!(answer(&mut not_yet_taken).unwrap_err().is::<Closed>());
    // And nobody new gets in.
    let mut ready = tokio_test::task::spawn(futures::future::poll_fn(|cx| svc.poll_ready(cx)));
    assert!(assert_ready!(ready.poll()).unwrap_err().is::<Closed>());
}
