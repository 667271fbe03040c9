//! Items 1-3: size caps, batch-when-busy dispatch, `max_wait`, preferred
//! sizes, concurrent batches.

mod support;

use std::task::Poll;
use std::time::Duration;

use convoy_batcher::{BatchConfig, BatchLayer, WaitFor};
use support::*;
use tokio_test::{assert_pending, assert_ready};

#[tokio::test(start_paused = true)]
async fn a_lone_request_goes_out_at_once() {
    let config = BatchConfig::builder().max_batch_size(8).build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).expect("dispatched without waiting");
    assert_eq!(batch, vec![1]);
    assert_pending!(a.poll());
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut a).unwrap(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_batch_grows_while_the_service_is_busy() {
    let config = BatchConfig::builder().max_batch_size(3).build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut first = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (b1, s1) = next_batch(&mut handle).unwrap();
    assert_eq!(b1, vec![1]);

    // One batch at a time: these wait while batch 1 runs.
    let mut rest: Vec<_> = (2..=6).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    assert!(
        next_batch(&mut handle).is_none(),
        "slot busy: nothing dispatched"
    );

    echo(b1, s1);
    assert_pending!(drive(&mut worker));
    assert_eq!(answer(&mut first).unwrap(), 1);
    // The slot freed: the next batch takes up to the cap at once, FIFO.
    let (b2, s2) = next_batch(&mut handle).unwrap();
    assert_eq!(b2, vec![2, 3, 4]);
    echo(b2, s2);
    assert_pending!(drive(&mut worker));
    let (b3, s3) = next_batch(&mut handle).unwrap();
    assert_eq!(b3, vec![5, 6]);
    echo(b3, s3);
    assert_pending!(drive(&mut worker));
    for (i, f) in rest.iter_mut().enumerate() {
        assert_eq!(answer(f).unwrap(), i as u32 + 2);
    }
}

#[tokio::test(start_paused = true)]
async fn max_wait_is_measured_from_the_oldest_item() {
    let config = BatchConfig::builder()
        .max_batch_size(4)
        .max_wait(Duration::from_millis(10))
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    assert!(
        next_batch(&mut handle).is_none(),
        "waits for a fuller batch"
    );

    tokio::time::advance(Duration::from_millis(6)).await;
    let _b = call(&mut svc, 2);
    assert_pending!(drive(&mut worker));
    assert!(next_batch(&mut handle).is_none());

    // 10 ms after the OLDEST item (not the newest) the batch goes.
    tokio::time::advance(Duration::from_millis(4)).await;
    assert!(worker.is_woken());
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn a_full_batch_does_not_wait() {
    let config = BatchConfig::builder()
        .max_batch_size(2)
        .max_wait(Duration::from_secs(1))
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _a = call(&mut svc, 1);
    let _b = call(&mut svc, 2);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1, 2]);
}

#[tokio::test(start_paused = true)]
async fn preferred_sizes_go_first_then_whatever_is_left_at_the_deadline() {
    let config = BatchConfig::builder()
        .max_batch_size(8)
        .preferred_batch_sizes([2, 4])
        .max_wait(Duration::from_millis(5))
        .max_concurrent_batches(4)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _calls: Vec<_> = (1..=7).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    // 7 queued: the largest preferred size that fits (4), then 2, then 1 waits.
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1, 2, 3, 4]);
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![5, 6]);
    assert!(next_batch(&mut handle).is_none());
    tokio::time::advance(Duration::from_millis(5)).await;
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![7]);
}

#[tokio::test(start_paused = true)]
async fn concurrent_batches_run_side_by_side() {
    let config = BatchConfig::builder()
        .max_batch_size(2)
        .max_concurrent_batches(2)
        .build()
        .unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let _a = call(&mut svc, 1);
    assert_pending!(drive(&mut worker));
    let (b1, s1) = next_batch(&mut handle).unwrap();
    let _more: Vec<_> = (2..=5).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    // Second slot: one more batch goes while the first runs; the rest waits.
    let (b2, _s2) = next_batch(&mut handle).unwrap();
    assert_eq!((b1.clone(), b2), (vec![1], vec![2, 3]));
    assert!(next_batch(&mut handle).is_none());
    echo(b1, s1);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![4, 5]);
}

#[tokio::test(start_paused = true)]
async fn the_inner_services_readiness_gates_dispatch() {
    let config = BatchConfig::builder().max_batch_size(4).build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    handle.allow(0);
    let _calls: Vec<_> = (1..=3).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    assert!(next_batch(&mut handle).is_none());
    handle.allow(1);
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1, 2, 3]);
}

#[tokio::test(start_paused = true)]
async fn cost_cap_limits_a_batch_and_an_oversized_item_goes_alone() {
    let layer = BatchLayer::<u32, u32>::new(
        BatchConfig::builder()
            .max_batch_size(10)
            .max_batch_cost(10)
            .max_concurrent_batches(8)
            .build()
            .unwrap(),
    )
    .cost_fn(|x: &u32| u64::from(*x));
    let (mut svc, mut worker, mut handle) = batcher_with(layer);
    let _calls: Vec<_> = [3, 4, 5, 12, 1]
        .iter()
        .map(|&i| call(&mut svc, i))
        .collect();
    assert_pending!(drive(&mut worker));
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![3, 4]);
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![5]);
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![12]);
    assert_eq!(next_batch(&mut handle).unwrap().0, vec![1]);
}

#[tokio::test(start_paused = true)]
async fn the_worker_ends_when_every_handle_is_gone_and_the_queue_is_drained() {
    let config = BatchConfig::builder().build().unwrap();
    let (mut svc, mut worker, mut handle) = batcher(config);
    let mut a = call(&mut svc, 7);
    drop(svc);
    assert_pending!(drive(&mut worker));
    let (b, s) = next_batch(&mut handle).unwrap();
    echo(b, s);
    assert_ready!(drive(&mut worker));
    assert_eq!(answer(&mut a).unwrap(), 7);
}

fn recent_load(max_batch_size: usize, max_wait: Duration) -> BatchConfig {
    BatchConfig::builder()
        .max_batch_size(max_batch_size)
        .max_wait(max_wait)
        .wait_for(WaitFor::RecentLoad)
        .build()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn under_recent_load_a_lone_caller_never_waits() {
    let (mut svc, mut worker, mut handle) = batcher(recent_load(8, Duration::from_secs(1)));
    for i in 0..20 {
        let mut a = call(&mut svc, i);
        assert_pending!(drive(&mut worker));
        // No time passes: the batch went without a timer.
        let (batch, send) = next_batch(&mut handle).expect("a lone caller goes at once");
        assert_eq!(batch, vec![i]);
        echo(batch, send);
        assert_pending!(drive(&mut worker));
        assert_eq!(answer(&mut a).unwrap(), i);
    }
}

#[tokio::test(start_paused = true)]
async fn under_recent_load_a_batch_waits_for_the_callers_just_answered() {
    let wait = Duration::from_millis(5);
    let (mut svc, mut worker, mut handle) = batcher(recent_load(8, wait));
    // Four callers at once: that is the load, so they go at once.
    let mut calls: Vec<_> = (1..=4).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![1, 2, 3, 4]);
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    for (i, c) in calls.iter_mut().enumerate() {
        assert_eq!(answer(c).unwrap(), i as u32 + 1);
    }

    // Three come back: the fourth is expected, so the batch waits...
    let mut calls: Vec<_> = (5..=7).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    assert!(next_batch(&mut handle).is_none(), "waits for the fourth");
    tokio::time::advance(Duration::from_millis(1)).await;
    // ...and goes the moment it is back, without waiting out max_wait.
    calls.push(call(&mut svc, 8));
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![5, 6, 7, 8]);
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    for c in &mut calls {
        answer(c).unwrap();
    }

    // Only three come back: max_wait bounds the wait for the fourth.
    let mut calls: Vec<_> = (9..=11).map(|i| call(&mut svc, i)).collect();
    assert_pending!(drive(&mut worker));
    tokio::time::advance(wait - Duration::from_millis(1)).await;
    assert_pending!(drive(&mut worker));
    assert!(next_batch(&mut handle).is_none());
    tokio::time::advance(Duration::from_millis(1)).await;
    assert!(worker.is_woken());
    assert_pending!(drive(&mut worker));
    let (batch, send) = next_batch(&mut handle).unwrap();
    assert_eq!(batch, vec![9, 10, 11]);
    echo(batch, send);
    assert_pending!(drive(&mut worker));
    for c in &mut calls {
        answer(c).unwrap();
    }

    // Load falls to one caller: it waits for callers that are gone only
    // until the peak has rolled off: eight windows, and the one that
    // opened while the last three still ran.
    let mut waited = 0;
    let mut at_once = 0;
    for i in 100..120 {
        let mut a = call(&mut svc, i);
        assert_pending!(drive(&mut worker));
        let (batch, send) = match next_batch(&mut handle) {
            Some(ready) => {
                at_once += 1;
                ready
            }
            None => {
                assert_eq!(at_once, 0, "waited again after going at once");
                waited += 1;
                tokio::time::advance(wait).await;
                assert_pending!(drive(&mut worker));
                next_batch(&mut handle).expect("dispatched by max_wait at the latest")
            }
        };
        assert_eq!(batch, vec![i]);
        echo(batch, send);
        assert_pending!(drive(&mut worker));
        assert_eq!(answer(&mut a).unwrap(), i);
    }
    assert!(
        (1..=9).contains(&waited),
        "a lone caller waited {waited} times: the peak rolls off within nine batches"
    );
}

#[tokio::test(start_paused = true)]
async fn closed_loop_callers_split_in_turns_without_waiting_and_share_under_recent_load() {
    // Four callers that send again as soon as they are answered, one batch
    // at a time, each batch running 10 ms (longer than `max_wait`: those
    // queued meanwhile have waited for room, not for company). The first
    // caller arrives alone, the other three while it runs.
    for (wait_for, expected) in [
        (None, [1, 3, 1, 3]),
        (Some(WaitFor::RecentLoad), [1, 4, 4, 4]),
    ] {
        let mut builder = BatchConfig::builder().max_batch_size(8);
        if let Some(w) = wait_for {
            builder = builder.wait_for(w).max_wait(Duration::from_millis(5));
        }
        let (mut svc, mut worker, mut handle) = batcher(builder.build().unwrap());
        let mut callers = vec![call(&mut svc, 0)];
        assert_pending!(drive(&mut worker));
        callers.extend((1..=3).map(|i| call(&mut svc, i)));
        assert_pending!(drive(&mut worker));
        let mut next = 3;
        let mut sizes = [0; 4];
        for size in &mut sizes {
            let (batch, send) = next_batch(&mut handle).expect("a batch runs");
            *size = batch.len();
            tokio::time::advance(Duration::from_millis(10)).await;
            echo(batch, send);
            assert_pending!(drive(&mut worker));
            // Those answered send again; no time passes.
            for caller in &mut callers {
                if let Poll::Ready(r) = caller.poll() {
                    r.unwrap();
                    next += 1;
                    *caller = call(&mut svc, next);
                }
            }
            assert_pending!(drive(&mut worker));
        }
        assert_eq!(sizes, expected, "{wait_for:?}");
    }
}
