//! Balancer: p2c over a Discover stream, Clone, fail-fast.

use std::collections::HashMap;
use std::task::{Context, Poll};
use std::time::Duration;

use convoy_router::balance::{BalanceConfig, Balancer, LoadMetric};
use convoy_router::NoReadyReplica;
use futures::channel::mpsc;
use futures::StreamExt;
use tokio::time::Instant;
use tower::discover::Change;
use tower::{service_fn, BoxError, Service, ServiceExt};

type Replica = tower::util::BoxService<u32, u32, BoxError>;

fn replica(id: u32) -> Replica {
    tower::util::BoxService::new(service_fn(move |_: u32| async move {
        tokio::time::sleep(Duration::from_millis(u64::from(id) + 1)).await;
        Ok::<_, BoxError>(id)
    }))
}

struct NeverReady;

impl Service<u32> for NeverReady {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x))
    }
}

fn config() -> BalanceConfig {
    BalanceConfig {
        ready_timeout: Duration::from_secs(1),
        ..BalanceConfig::default()
    }
}

#[tokio::test(start_paused = true)]
async fn fails_fast_without_replicas_then_recovers() {
    let (tx, rx) = mpsc::unbounded::<Result<Change<u32, Replica>, BoxError>>();
    let balancer = Balancer::new(rx, config()).unwrap();

    let start = Instant::now();
    let err = balancer.clone().oneshot(1).await.unwrap_err();
    assert!(err.is::<NoReadyReplica>(), "{err}");
    assert_eq!(start.elapsed(), Duration::from_secs(1));

    // While nothing is ready, later requests fail at once.
    let start = Instant::now();
    let err = balancer.clone().oneshot(2).await.unwrap_err();
    assert!(err.is::<NoReadyReplica>());
    assert_eq!(start.elapsed(), Duration::ZERO);

    tx.unbounded_send(Ok(Change::Insert(7, replica(7))))
        .unwrap();
    assert_eq!(balancer.clone().oneshot(3).await.unwrap(), 7);
}

#[tokio::test(start_paused = true)]
async fn fails_fast_when_replicas_never_become_ready() {
    let replicas =
        futures::stream::iter((0..2u32).map(|k| {
            Ok::<_, BoxError>(Change::Insert(k, tower::util::BoxService::new(NeverReady)))
        }))
        .chain(futures::stream::pending());
    let balancer = Balancer::new(replicas, config()).unwrap();
    let start = Instant::now();
    let err = balancer.oneshot(1).await.unwrap_err();
    assert!(err.is::<NoReadyReplica>());
    assert_eq!(start.elapsed(), Duration::from_secs(1));
}

#[tokio::test(start_paused = true)]
async fn balances_over_replicas_from_clones_and_tasks() {
    for load in [LoadMetric::PendingRequests, LoadMetric::default()] {
        let replicas = futures::stream::iter(
            (0..3u32).map(|k| Ok::<_, BoxError>(Change::Insert(k, replica(k)))),
        )
        .chain(futures::stream::pending());
        let balancer = Balancer::new(replicas, BalanceConfig { load, ..config() }).unwrap();
        let tasks: Vec<_> = (0..300)
            .map(|x| tokio::spawn(balancer.clone().oneshot(x)))
            .collect();
        let mut per_replica = HashMap::new();
        for t in tasks {
            *per_replica.entry(t.await.unwrap().unwrap()).or_insert(0) += 1;
        }
        assert_eq!(per_replica.len(), 3, "{load:?}: {per_replica:?}");
        assert_eq!(per_replica.values().sum::<i32>(), 300);
    }
}

#[tokio::test(start_paused = true)]
async fn removed_replicas_get_no_more_requests() {
    let (tx, rx) = mpsc::unbounded::<Result<Change<u32, Replica>, BoxError>>();
    tx.unbounded_send(Ok(Change::Insert(1, replica(1))))
        .unwrap();
    tx.unbounded_send(Ok(Change::Insert(2, replica(2))))
        .unwrap();
    let balancer = Balancer::new(rx, config()).unwrap();
    balancer.clone().oneshot(0).await.unwrap();
    tx.unbounded_send(Ok(Change::Remove(1))).unwrap();
    for x in 0..20 {
        assert_eq!(balancer.clone().oneshot(x).await.unwrap(), 2);
    }
}

#[tokio::test]
async fn invalid_config_is_rejected() {
    let replicas = futures::stream::pending::<Result<Change<u32, Replica>, BoxError>>();
    let cfg = BalanceConfig {
        ready_timeout: Duration::ZERO,
        ..config()
    };
    assert!(Balancer::<u32, u32>::new(replicas, cfg).is_err());
    let replicas = futures::stream::pending::<Result<Change<u32, Replica>, BoxError>>();
    let cfg = BalanceConfig {
        buffer_capacity: usize::MAX,
        ..config()
    };
    assert!(Balancer::<u32, u32>::new(replicas, cfg).is_err());
}
