//! ReplicaSet as a Scaler and a Discover source for tower::balance, under paused time.

mod common;
use common::settle;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::replica_set::ReplicaLimit;
use convoy_autoscale::{
    Autoscaler, Engine, EngineConfig, ReplicaCounts, ReplicaSet, ReplicaSetConfig, Scaler,
    SignalSource, TargetOngoing, TargetOngoingConfig,
};
use futures::stream::{FuturesUnordered, StreamExt};
use tower::balance::p2c::Balance;
use tower::discover::Change;
use tower::util::BoxService;
use tower::{service_fn, BoxError, Service, ServiceExt};

fn s(secs: u64) -> Duration {
    Duration::from_secs(secs)
}

type Hits = Arc<Vec<AtomicUsize>>;
type Svc = BoxService<u32, u32, BoxError>;

/// Replicas that take `init` to start and `work` per request, counting requests per replica.
fn slow_set(init: Duration, work: Duration, hits: Hits) -> ReplicaSet<Svc> {
    let next = Arc::new(AtomicUsize::new(0));
    ReplicaSet::new(ReplicaSetConfig::default().max_replicas(8), move || {
        let hits = Arc::clone(&hits);
        let me = next.fetch_add(1, Ordering::Relaxed);
        async move {
            tokio::time::sleep(init).await;
            Ok::<_, BoxError>(BoxService::new(service_fn(move |x: u32| {
                hits[me].fetch_add(1, Ordering::Relaxed);
                async move {
                    tokio::time::sleep(work).await;
                    Ok::<_, BoxError>(x + 1)
                }
            })))
        }
    })
    .unwrap()
}

fn hits(n: usize) -> Hits {
    Arc::new((0..n).map(|_| AtomicUsize::new(0)).collect())
}

#[tokio::test(start_paused = true)]
async fn replicas_are_ready_only_after_async_init() {
    let set = slow_set(s(5), s(1), hits(8));
    set.scale_to(2).await.unwrap();
    assert_eq!(set.replicas(), ReplicaCounts::new(2, 0));
    tokio::time::sleep(s(4)).await;
    assert_eq!(set.replicas(), ReplicaCounts::new(2, 0));
    tokio::time::sleep(s(1)).await;
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::new(2, 2));
}

#[tokio::test(start_paused = true)]
async fn replicas_are_ready_only_after_poll_ready() {
    let (handles_tx, mut handles_rx) = tokio::sync::mpsc::unbounded_channel();
    let set = ReplicaSet::new(ReplicaSetConfig::default(), move || {
        let (svc, mut handle) = tower_test::mock::pair::<u32, u32>();
        handle.allow(0);
        handles_tx.send(handle).unwrap();
        async move { Ok::<_, BoxError>(svc) }
    })
    .unwrap();
    set.scale_to(1).await.unwrap();
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::new(1, 0));
    let mut handle = handles_rx.recv().await.unwrap();
    handle.allow(1);
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::new(1, 1));
}

#[tokio::test(start_paused = true)]
async fn balance_spreads_requests_over_ready_replicas() {
    let counts = hits(8);
    let set = slow_set(s(2), s(1), Arc::clone(&counts));
    set.scale_to(3).await.unwrap();
    tokio::time::sleep(s(2)).await;
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::ready(3));

    let mut balance = Balance::new(set.discover());
    let mut in_flight = FuturesUnordered::new();
    for i in 0..60u32 {
        let svc = balance.ready().await.unwrap();
        in_flight.push(svc.call(i));
    }
    // All 60 are in flight on the replicas: the set reports them as ongoing.
    let mut source = set.clone();
    let sample = source.sample(Duration::ZERO).unwrap();
    assert_eq!(sample.ongoing, 60.0);
    assert_eq!(sample.arrivals, 60);
    let mut sum = 0;
    while let Some(r) = in_flight.next().await {
        sum += r.unwrap();
    }
    assert_eq!(sum, (1..=60).sum::<u32>());
    // p2c by in-flight load: every replica got a fair share.
    for (i, c) in counts.iter().take(3).enumerate() {
        let c = c.load(Ordering::Relaxed);
        assert!((10..=30).contains(&c), "replica {i} got {c}");
    }
    let sample = source.sample(Duration::ZERO).unwrap();
    assert_eq!(
        (sample.ongoing, sample.completions, sample.arrivals),
        (0.0, 60, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn removal_is_graceful() {
    let set = slow_set(Duration::ZERO, s(10), hits(8));
    set.scale_to(2).await.unwrap();
    settle().await;
    let mut balance = Balance::new(set.discover());
    let mut in_flight = FuturesUnordered::new();
    for i in 0..4u32 {
        let svc = balance.ready().await.unwrap();
        in_flight.push(svc.call(i));
    }
    set.scale_to(1).await.unwrap();
    assert_eq!(set.replicas(), ReplicaCounts::ready(1));
    assert_eq!(set.draining(), 1);
    // The balancer drops the removed replica; new requests go to the other one.
    let svc = balance.ready().await.unwrap();
    in_flight.push(svc.call(100));
    // Every request, including those on the removed replica, completes.
    let mut done = 0;
    while let Some(r) = in_flight.next().await {
        r.unwrap();
        done += 1;
    }
    assert_eq!(done, 5);
    assert_eq!(set.draining(), 0);
}

#[tokio::test(start_paused = true)]
async fn discover_inserts_ready_and_removes_announced() {
    let set = slow_set(s(1), s(1), hits(8));
    let mut discover = set.discover();
    set.scale_to(2).await.unwrap();
    let mut next = tokio_test::task::spawn(discover.next());
    tokio_test::assert_pending!(next.poll());
    drop(next);
    tokio::time::sleep(s(1)).await;
    settle().await;
    let mut inserted = Vec::new();
    for _ in 0..2 {
        match discover.next().await.unwrap().unwrap() {
            Change::Insert(id, replica) => {
                assert_eq!(replica.id(), id);
                inserted.push(id);
            }
            Change::Remove(id) => panic!("unexpected removal of {id}"),
        }
    }
    set.scale_to(1).await.unwrap();
    match discover.next().await.unwrap().unwrap() {
        Change::Remove(id) => assert!(inserted.contains(&id)),
        Change::Insert(id, _) => panic!("unexpected insert of {id}"),
    }
    assert_eq!(set.ready_ids().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn scaling_down_stops_starting_replicas_first() {
    let set = slow_set(s(10), s(1), hits(8));
    set.scale_to(2).await.unwrap();
    tokio::time::sleep(s(10)).await;
    settle().await;
    let mut discover = set.discover();
    assert!(matches!(
        discover.next().await,
        Some(Ok(Change::Insert(..)))
    ));
    assert!(matches!(
        discover.next().await,
        Some(Ok(Change::Insert(..)))
    ));
    set.scale_to(5).await.unwrap();
    assert_eq!(set.replicas(), ReplicaCounts::new(5, 2));
    set.scale_to(2).await.unwrap();
    assert_eq!(set.replicas(), ReplicaCounts::ready(2));
    // The aborted starts never become replicas, and nothing announced was removed.
    tokio::time::sleep(s(20)).await;
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::ready(2));
    let mut next = tokio_test::task::spawn(discover.next());
    tokio_test::assert_pending!(next.poll());
}

#[tokio::test(start_paused = true)]
async fn limits_and_failed_starts() {
    let set = slow_set(Duration::ZERO, s(1), hits(8));
    let err = set.scale_to(9).await.unwrap_err();
    assert!(err.is::<ReplicaLimit>(), "{err}");
    let zero = ReplicaSet::<Svc>::new::<u32, _, _, BoxError>(
        ReplicaSetConfig::default().max_replicas(0),
        || async { Err("unused".into()) },
    );
    assert!(zero.is_err());

    let failing = ReplicaSet::new(ReplicaSetConfig::default(), || async {
        Err::<Svc, _>("model file missing")
    })
    .unwrap();
    failing.scale_to(2).await.unwrap();
    settle().await;
    assert_eq!(failing.failed_starts(), 2);
    assert_eq!(failing.replicas(), ReplicaCounts::new(0, 0));
}

#[tokio::test(start_paused = true)]
async fn autoscaler_drives_a_replica_set_from_its_own_load() {
    let set = slow_set(s(3), s(120), hits(8));
    let policy = TargetOngoing::new(TargetOngoingConfig::default()).unwrap();
    let cfg = EngineConfig::default()
        .max_replicas(8)
        .upscale_delay(s(5))
        .interval(s(1));
    let engine = Engine::new(cfg, Box::new(policy)).unwrap();
    let autoscaler = Autoscaler::new(engine, set.clone()).with_source(set.clone());
    let handle = autoscaler.handle();
    let task = tokio::spawn(autoscaler.run());

    // The initial replica starts.
    tokio::time::sleep(s(4)).await;
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::ready(1));

    // 12 long requests in flight at target 2 → 6 replicas, once the 30 s
    // look-back average has caught up (Ray semantics: no jump on a partial window).
    let mut balance = Balance::new(set.discover());
    let in_flight = FuturesUnordered::new();
    for i in 0..12u32 {
        let svc = balance.ready().await.unwrap();
        in_flight.push(svc.call(i));
    }
    tokio::time::sleep(s(10)).await;
    settle().await;
    let early = set.replicas().current;
    assert!((2..6).contains(&early), "{early}");
    tokio::time::sleep(s(30)).await;
    settle().await;
    assert_eq!(set.replicas(), ReplicaCounts::ready(6));
    assert_eq!(handle.last_decision().unwrap().reason.kind(), "scale");
    handle.shutdown();
    task.await.unwrap();
}
