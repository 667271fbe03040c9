//! Ejection, probing and draining with mock endpoints on paused time.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use convoy_router::balance::{BalanceConfig, LoadMetric};
use parking_lot::Mutex;
use tower::util::BoxCloneSyncService;
use tower::{service_fn, BoxError, ServiceExt};

use super::*;
use crate::{Endpoint, NotSent, StaticSource};

fn ep(id: &str, port: u16) -> Endpoint {
    Endpoint::ready(id, ([10, 0, 0, 1], port).into(), "v1")
}

fn balance() -> BalanceConfig {
    BalanceConfig {
        load: LoadMetric::PendingRequests,
        ready_timeout: Duration::from_millis(500),
        buffer_capacity: 64,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Behaviour {
    Ok,
    Fail,
    Refuse,
}

/// Endpoints whose behaviour and health the test sets, counting calls.
#[derive(Clone, Default)]
struct Cluster {
    behaviour: Arc<Mutex<HashMap<String, Behaviour>>>,
    healthy: Arc<Mutex<HashMap<String, bool>>>,
    calls: Arc<Mutex<HashMap<String, u32>>>,
    /// Every call: (endpoint, request, behaviour).
    log: Arc<Mutex<Vec<(String, u64, Behaviour)>>>,
}

type Svc = BoxCloneSyncService<u64, (String, u64), BoxError>;

impl Cluster {
    fn set(&self, id: &str, b: Behaviour, healthy: bool) {
        self.behaviour.lock().insert(id.into(), b);
        self.healthy.lock().insert(id.into(), healthy);
    }

    fn calls(&self, id: &str) -> u32 {
        self.calls.lock().get(id).copied().unwrap_or(0)
    }

    fn connector(&self) -> impl Connect<Service = Svc> {
        let cluster = self.clone();
        move |endpoint: &Endpoint| -> Svc {
            let cluster = cluster.clone();
            let id = endpoint.id.clone();
            BoxCloneSyncService::new(service_fn(move |x: u64| {
                let cluster = cluster.clone();
                let id = id.clone();
                async move {
                    *cluster.calls.lock().entry(id.clone()).or_default() += 1;
                    let b = cluster
                        .behaviour
                        .lock()
                        .get(&id)
                        .copied()
                        .unwrap_or(Behaviour::Ok);
                    cluster.log.lock().push((id.clone(), x, b));
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    match b {
                        Behaviour::Ok => Ok((id, x)),
                        Behaviour::Fail => Err(BoxError::from(format!("{id} failed"))),
                        Behaviour::Refuse => Err(NotSent::new("connection refused").into()),
                    }
                }
            }))
        }
    }

    fn probe(&self) -> impl Probe {
        let healthy = self.healthy.clone();
        move |endpoint: &Endpoint| {
            let ok = healthy.lock().get(&endpoint.id).copied().unwrap_or(true);
            async move { ok }
        }
    }
}

fn config(eject_after: u32) -> PoolConfig {
    PoolConfig {
        eject_after,
        probe_interval: Duration::from_secs(1),
        probe_timeout: Duration::from_millis(100),
    }
}

async fn settle() {
    // Let the pool's worker and the balancer's worker run.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    tokio::time::sleep(Duration::from_millis(5)).await;
}

fn status<S: Send + 'static>(pool: &Pool<S>, id: &str) -> EndpointStatus {
    pool.endpoints()
        .into_iter()
        .find(|s| s.endpoint.id == id)
        .unwrap_or_else(|| panic!("{id} unknown"))
}

#[tokio::test(start_paused = true)]
async fn consecutive_failures_eject_and_a_passing_probe_brings_back() {
    let cluster = Cluster::default();
    // Its health probe passes: only the failed calls eject it.
    cluster.set("a", Behaviour::Fail, true);
    cluster.set("b", Behaviour::Ok, true);
    let source = StaticSource::new([ep("a", 1), ep("b", 2)]);
    let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(3)).unwrap();
    let balancer = pool.balancer::<u64>("v1", balance()).unwrap();
    settle().await;

    let mut failed = 0;
    for x in 0..40 {
        if balancer.clone().oneshot(x).await.is_err() {
            failed += 1;
        }
        settle().await;
    }
    // Three failures in a row took `a` out; nothing reached it after.
    assert_eq!(cluster.calls("a"), 3);
    assert_eq!(failed, 3);
    let a = status(&pool, "a");
    assert!(a.ejected && !a.serving, "{a:?}");

    // Its probes fail from now on: it stays out.
    cluster.set("a", Behaviour::Fail, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert!(status(&pool, "a").ejected);
    // Repaired: the next probe puts it back with a fresh failure count.
    cluster.set("a", Behaviour::Ok, true);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settle().await;
    assert!(status(&pool, "a").serving);
    for x in 0..40 {
        balancer.clone().oneshot(x).await.unwrap();
    }
    assert!(cluster.calls("a") > 3, "a got {} calls", cluster.calls("a"));
}

#[tokio::test(start_paused = true)]
async fn a_failed_probe_ejects_at_once() {
    let cluster = Cluster::default();
    cluster.set("a", Behaviour::Ok, true);
    cluster.set("b", Behaviour::Ok, true);
    let source = StaticSource::new([ep("a", 1), ep("b", 2)]);
    let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(100)).unwrap();
    let balancer = pool.balancer::<u64>("v1", balance()).unwrap();
    settle().await;
    cluster.set("a", Behaviour::Ok, false);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    settle().await;
    assert!(status(&pool, "a").ejected);
    let before = cluster.calls("a");
    for x in 0..20 {
        assert_eq!(balancer.clone().oneshot(x).await.unwrap().0, "b");
    }
    assert_eq!(cluster.calls("a"), before);
}

#[tokio::test(start_paused = true)]
async fn a_draining_endpoint_gets_no_new_request_and_finishes_the_one_in_flight() {
    let (a, mut a_handle) = tower_test::mock::pair::<u64, u64>();
    let (b, mut b_handle) = tower_test::mock::pair::<u64, u64>();
    let mocks: HashMap<&str, tower_test::mock::Mock<u64, u64>> = [("a", a), ("b", b)].into();
    let connector = move |e: &Endpoint| mocks[e.id.as_str()].clone();
    let (source, handle) = StaticSource::with_handle([ep("a", 1)]);
    let pool = Pool::new(source, connector, |_: &Endpoint| async { true }, config(3)).unwrap();
    let balancer = pool.balancer::<u64>("v1", balance()).unwrap();
    a_handle.allow(10);
    b_handle.allow(10);

    let first = tokio::spawn(balancer.clone().oneshot(1));
    let (req, in_flight) = a_handle.next_request().await.unwrap();
    assert_eq!(req, 1);

    handle.set([ep("a", 1).draining(), ep("b", 2)]);
    settle().await;
    let second = tokio::spawn(balancer.clone().oneshot(2));
    let (req, rsp) = b_handle.next_request().await.unwrap();
    assert_eq!(req, 2);
    rsp.send_response(20);
    assert_eq!(second.await.unwrap().unwrap(), 20);

    // The request sent before the drain is answered by `a`.
    in_flight.send_response(10);
    assert_eq!(first.await.unwrap().unwrap(), 10);
    tokio_test::assert_pending!(futures::poll!(std::pin::pin!(a_handle.next_request())));
    assert!(!status(&pool, "a").serving);
}

#[tokio::test(start_paused = true)]
async fn invalid_configuration_names_the_field() {
    let err = Pool::new(
        StaticSource::new([]),
        |_: &Endpoint| service_fn(|x: u64| async move { Ok::<_, BoxError>(x) }),
        |_: &Endpoint| async { true },
        config(0),
    )
    .unwrap_err();
    assert_eq!(err.field(), "eject_after");
}

fn retry(min_per_sec: u32, retry_percent: f32) -> tower::retry::RetryLayer<NeverSentPolicy> {
    NeverSentPolicy::layer(&crate::RetryConfig {
        min_per_sec,
        retry_percent,
        ..Default::default()
    })
    .unwrap()
}

use crate::NeverSentPolicy;
use tower::Layer;

#[tokio::test(start_paused = true)]
async fn a_refused_request_is_retried_on_another_endpoint() {
    let cluster = Cluster::default();
    // (Its probe passes until the test is over: only the call is refused.)
    cluster.set("a", Behaviour::Refuse, true);
    cluster.set("b", Behaviour::Ok, true);
    let source = StaticSource::new([ep("a", 1), ep("b", 2)]);
    let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(1)).unwrap();
    let client = retry(10, 0.5).layer(pool.balancer::<u64>("v1", balance()).unwrap());
    settle().await;
    for x in 0..50 {
        assert_eq!(
            client.clone().oneshot(x).await.unwrap(),
            ("b".to_string(), x)
        );
    }
    // One refusal ejected it: the retry of that request, and every later
    // request, went to b.
    assert_eq!(cluster.calls("a"), 1);
    assert!(status(&pool, "a").ejected);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_reached_its_endpoint_is_not_retried() {
    let cluster = Cluster::default();
    cluster.set("a", Behaviour::Fail, true);
    cluster.set("b", Behaviour::Ok, true);
    let source = StaticSource::new([ep("a", 1), ep("b", 2)]);
    let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(1000)).unwrap();
    let client = retry(10, 0.5).layer(pool.balancer::<u64>("v1", balance()).unwrap());
    settle().await;
    let mut failed = 0;
    for x in 0..50 {
        if client.clone().oneshot(x).await.is_err() {
            failed += 1;
        }
    }
    assert!(failed > 0, "p2c never picked a");
    assert_eq!(failed, cluster.calls("a"));
}

#[tokio::test(start_paused = true)]
async fn retries_stop_when_the_budget_is_spent() {
    let cluster = Cluster::default();
    cluster.set("a", Behaviour::Refuse, true);
    cluster.set("b", Behaviour::Ok, true);
    let source = StaticSource::new([ep("a", 1), ep("b", 2)]);
    let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(1000)).unwrap();
    // No reserve and no share: never a retry.
    let client = retry(0, 0.0).layer(pool.balancer::<u64>("v1", balance()).unwrap());
    settle().await;
    let mut refused = 0;
    for x in 0..50 {
        match client.clone().oneshot(x).await {
            Ok(_) => {}
            Err(e) => {
                assert!(NotSent::is_in(&*e), "{e}");
                refused += 1;
            }
        }
    }
    assert_eq!(refused, cluster.calls("a"));
    assert!(refused > 0);
}

mod prop {
    use super::*;
    use proptest::prelude::*;

    #[derive(Debug, Clone)]
    enum Op {
        Requests(u8),
        Add(u8, Behaviour),
        Remove(u8),
        Drain(u8),
        Advance(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        let behaviour = prop_oneof![
            4 => Just(Behaviour::Ok),
            1 => Just(Behaviour::Fail),
            1 => Just(Behaviour::Refuse),
        ];
        prop_oneof![
            3 => (1u8..8).prop_map(Op::Requests),
            2 => (0u8..4, behaviour).prop_map(|(i, b)| Op::Add(i, b)),
            1 => (0u8..4).prop_map(Op::Remove),
            1 => (0u8..4).prop_map(Op::Drain),
            2 => (0u16..50).prop_map(Op::Advance),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// While endpoints come, go, drain, fail and refuse connections,
        /// every request admitted gets exactly one answer (none hangs), an
        /// answer is the one to that request, and no request runs twice.
        #[test]
        fn every_admitted_request_gets_exactly_one_response(ops in proptest::collection::vec(op(), 1..40)) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .unwrap();
            rt.block_on(async move {
                let cluster = Cluster::default();
                let (source, handle) = StaticSource::with_handle([]);
                let pool = Pool::new(source, cluster.connector(), cluster.probe(), config(2)).unwrap();
                let client = retry(5, 0.2).layer(pool.balancer::<u64>("v1", balance()).unwrap());
                let mut requests = Vec::new();
                let mut next = 0u64;
                for op in ops {
                    match op {
                        Op::Requests(n) => for _ in 0..n {
                            let x = next;
                            next += 1;
                            let c = client.clone();
                            requests.push((x, tokio::spawn(async move { c.oneshot(x).await })));
                        },
                        Op::Add(i, b) => {
                            let id = format!("e{i}");
                            cluster.set(&id, b, b == Behaviour::Ok);
                            handle.upsert(ep(&id, 100 + u16::from(i)));
                        }
                        Op::Remove(i) => handle.remove(&format!("e{i}")),
                        Op::Drain(i) => {
                            let id = format!("e{i}");
                            handle.upsert(ep(&id, 100 + u16::from(i)).draining());
                        }
                        Op::Advance(ms) => tokio::time::sleep(Duration::from_millis(ms.into())).await,
                    }
                }
                let log_of = |x: u64| -> Vec<(String, Behaviour)> {
                    cluster.log.lock().iter().filter(|(_, y, _)| *y == x).map(|(id, _, b)| (id.clone(), *b)).collect()
                };
                for (x, task) in requests {
                    let answer = tokio::time::timeout(Duration::from_secs(30), task)
                        .await
                        .unwrap_or_else(|_| panic!("request {x} got no answer"))
                        .unwrap();
                    let calls = log_of(x);
                    let ran: Vec<_> = calls.iter().filter(|(_, b)| *b != Behaviour::Refuse).collect();
                    assert!(ran.len() <= 1, "request {x} ran {} times: {calls:?}", ran.len());
                    match answer {
                        Ok((id, y)) => {
                            assert_eq!(y, x);
                            assert_eq!(ran.as_slice(), &[&(id, Behaviour::Ok)]);
                        }
                        Err(_) => assert!(ran.iter().all(|(_, b)| *b == Behaviour::Fail), "{calls:?}"),
                    }
                }
            });
        }
    }
}
