//! Split: picking, readiness, clones, live updates, sticky keys, overrides.

use std::future::{ready, Ready};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use convoy_router::split::HeaderOverride;
use convoy_router::{ConfigErrorKind, PickStrategy, Split, StickyStrategy, WhenNotReady};
use futures::executor::block_on;
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio_test::{assert_pending, assert_ready_ok, task};
use tower::{service_fn, BoxError, Service, ServiceExt};

/// A backend whose readiness the test controls and whose polls are counted.
#[derive(Clone)]
struct Probe {
    name: &'static str,
    state: Arc<ProbeState>,
}

#[derive(Default)]
struct ProbeState {
    ready: AtomicBool,
    polls: AtomicUsize,
    calls: AtomicUsize,
    wakers: Mutex<Vec<Waker>>,
}

impl Probe {
    fn new(name: &'static str, ready: bool) -> Self {
        let state = Arc::new(ProbeState::default());
        state.ready.store(ready, Ordering::SeqCst);
        Self { name, state }
    }

    fn set_ready(&self) {
        self.state.ready.store(true, Ordering::SeqCst);
        for w in self.state.wakers.lock().drain(..) {
            w.wake();
        }
    }

    fn polls(&self) -> usize {
        self.state.polls.load(Ordering::SeqCst)
    }

    fn calls(&self) -> usize {
        self.state.calls.load(Ordering::SeqCst)
    }
}

impl Service<u32> for Probe {
    type Response = &'static str;
    type Error = BoxError;
    type Future = Ready<Result<&'static str, BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.state.polls.fetch_add(1, Ordering::SeqCst);
        if self.state.ready.load(Ordering::SeqCst) {
            Poll::Ready(Ok(()))
        } else {
            self.state.wakers.lock().push(cx.waker().clone());
            Poll::Pending
        }
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.state.calls.fetch_add(1, Ordering::SeqCst);
        ready(Ok(self.name))
    }
}

fn named(name: &'static str) -> Probe {
    Probe::new(name, true)
}

#[tokio::test]
async fn poll_ready_polls_only_the_picked_backend_and_waits() {
    let (v1, v2) = (Probe::new("v1", false), Probe::new("v2", true));
    let (split, _h) = Split::builder()
        .backend("v1", v1.clone(), 1.0)
        .backend("v2", v2.clone(), 1.0)
        .build()
        .unwrap();
    let mut svc = task::spawn(split);
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    // The pick is kept while waiting: only v1 is polled, v2 never.
    assert_eq!((v1.polls(), v2.polls()), (2, 0));
    v1.set_ready();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!(svc.call(1).await.unwrap(), "v1");
    assert_eq!(v2.polls(), 0);
}

#[tokio::test]
async fn spill_sends_to_a_ready_backend_and_counts_it() {
    let (v1, v2) = (Probe::new("v1", false), Probe::new("v2", true));
    let (split, handle) = Split::builder()
        .backend("v1", v1.clone(), 9.0)
        .backend("v2", v2.clone(), 1.0)
        .when_not_ready(WhenNotReady::Spill)
        .build()
        .unwrap();
    for _ in 0..5 {
        assert_eq!(split.clone().oneshot(1).await.unwrap(), "v2");
    }
    let snap = handle.snapshot();
    assert_eq!(snap.backend("v1").unwrap().spillover, 5);
    assert_eq!(snap.backend("v1").unwrap().requests, 0);
    assert_eq!(snap.backend("v2").unwrap().requests, 5);
}

#[tokio::test]
async fn clones_do_not_copy_readiness() {
    let v1 = Probe::new("v1", true);
    let (split, _h) = Split::builder()
        .backend("v1", v1.clone(), 1.0)
        .build()
        .unwrap();
    let mut a = task::spawn(split);
    assert_ready_ok!(a.enter(|cx, mut s| s.poll_ready(cx)));
    let mut b = task::spawn(a.clone());
    assert_eq!(v1.polls(), 1);
    // The clone must make its own backend instance ready.
    assert_ready_ok!(b.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!(v1.polls(), 2);
    assert_eq!(a.call(1).await.unwrap(), "v1");
    assert_eq!(b.call(2).await.unwrap(), "v1");
}

#[tokio::test]
#[should_panic(expected = "poll_ready must be called first")]
async fn call_without_poll_ready_on_a_clone_panics() {
    let (split, _h) = Split::builder()
        .backend("v1", named("v1"), 1.0)
        .build()
        .unwrap();
    let mut a = split.clone();
    futures::future::poll_fn(|cx| a.poll_ready(cx))
        .await
        .unwrap();
    let mut b = a.clone();
    drop(b.call(1));
}

#[tokio::test]
async fn zero_weight_backend_receives_nothing() {
    let (v1, v2, v3) = (named("v1"), named("v2"), named("v3"));
    let (split, handle) = Split::builder()
        .backend("v1", v1.clone(), 3.0)
        .backend("v2", v2.clone(), 0.0)
        .backend("v3", v3.clone(), 1.0)
        .build()
        .unwrap();
    for i in 0..400 {
        split.clone().oneshot(i).await.unwrap();
    }
    assert_eq!((v1.calls(), v2.calls(), v3.calls()), (300, 0, 100));
    assert_eq!(v2.polls(), 0);
    let shares = handle.snapshot().request_shares();
    assert_eq!(shares[0], ("v1".to_string(), 0.75));
}

#[test]
fn invalid_weights_fail_at_construction() {
    for (w, kind) in [
        ([0.0, 0.0], ConfigErrorKind::AllWeightsZero),
        ([-1.0, 2.0], ConfigErrorKind::InvalidWeight),
        ([f64::NAN, 2.0], ConfigErrorKind::InvalidWeight),
    ] {
        let err = Split::<Probe, u32>::builder()
            .backend("v1", named("v1"), w[0])
            .backend("v2", named("v2"), w[1])
            .build()
            .unwrap_err();
        assert_eq!(err.kind(), kind);
    }
    let err = Split::<Probe, u32>::builder()
        .backend("v1", named("v1"), 1.0)
        .backend("v1", named("v1"), 1.0)
        .build()
        .unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::DuplicateBackend);
}

#[tokio::test]
async fn live_updates_reach_every_clone_and_spare_in_flight_requests() {
    let gate = Arc::new(tokio::sync::Notify::new());
    let g = gate.clone();
    let slow_v1 = service_fn(move |x: u32| {
        let g = g.clone();
        async move {
            if x == 0 {
                g.notified().await;
            }
            Ok::<_, BoxError>("v1")
        }
    });
    let fast_v2 = service_fn(|_: u32| async { Ok::<_, BoxError>("v2") });
    let (split, handle) = Split::builder()
        .backend("v1", tower::util::BoxCloneService::new(slow_v1), 100.0)
        .backend("v2", tower::util::BoxCloneService::new(fast_v2), 0.0)
        .build()
        .unwrap();
    let mut a = split.clone();
    let b = split.clone();
    futures::future::poll_fn(|cx| a.poll_ready(cx))
        .await
        .unwrap();
    let in_flight = tokio::spawn(a.call(0));
    tokio::task::yield_now().await;

    handle.set_weights([("v1", 0.0), ("v2", 100.0)]).unwrap();
    assert_eq!(b.clone().oneshot(1).await.unwrap(), "v2");
    assert_eq!(a.clone().oneshot(1).await.unwrap(), "v2");
    assert_eq!(a.oneshot(1).await.unwrap(), "v2");

    gate.notify_one();
    assert_eq!(in_flight.await.unwrap().unwrap(), "v1");
    assert_eq!(handle.backend("v1").unwrap().completed, 1);
}

#[tokio::test]
async fn backends_are_added_and_removed_at_run_time() {
    let (split, handle) = Split::builder()
        .backend("v1", named("v1"), 1.0)
        .build()
        .unwrap();
    handle.insert_backend("v2", named("v2"), 1.0).unwrap();
    handle.set_weight("v1", 0.0).unwrap();
    assert_eq!(split.clone().oneshot(1).await.unwrap(), "v2");
    let err = handle.insert_backend("v2", named("v2"), 1.0).unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::DuplicateBackend);
    // Removing the only weighted backend would leave nothing to route to.
    let err = handle.remove_backend("v2").unwrap_err();
    assert_eq!(err.kind(), ConfigErrorKind::AllWeightsZero);
    assert_eq!(
        handle.remove_backend("nope").unwrap_err().kind(),
        ConfigErrorKind::UnknownBackend
    );
    // A rejected update changes nothing.
    assert!(handle.set_weights([("v1", 5.0), ("v2", f64::NAN)]).is_err());
    assert_eq!(
        handle.weights(),
        vec![("v1".into(), 0.0), ("v2".into(), 1.0)]
    );
    handle.set_weight("v1", 1.0).unwrap();
    handle.remove_backend("v2").unwrap();
    assert_eq!(split.clone().oneshot(1).await.unwrap(), "v1");
    assert!(handle.backend("v2").is_none());
}

#[tokio::test]
async fn sticky_keys_stick_and_shares_of_keys_are_reported() {
    let (split, handle) = Split::builder()
        .backend("stable", named("stable"), 50.0)
        .backend("canary", named("canary"), 50.0)
        .sticky_by(|user: &u32| Some(*user))
        .build()
        .unwrap();
    let mut first = std::collections::HashMap::new();
    for round in 0..3 {
        for user in 0..2_000u32 {
            let got = split.clone().oneshot(user).await.unwrap();
            if round == 0 {
                first.insert(user, got);
            } else {
                assert_eq!(first[&user], got, "user {user} moved");
            }
        }
    }
    let snap = handle.snapshot();
    let canary = snap.backend("canary").unwrap();
    let stable = snap.backend("stable").unwrap();
    assert_eq!(canary.keyed_requests + stable.keyed_requests, 6_000);
    let canary_users = first.values().filter(|v| **v == "canary").count() as f64;
    // HyperLogLog estimate within 5 % of the exact distinct count.
    assert!((canary.distinct_keys as f64 - canary_users).abs() / canary_users < 0.05);
    let key_share = snap.key_shares()[1].1;
    assert!((key_share - 0.5).abs() < 0.05, "{key_share}");
}

#[tokio::test]
async fn requests_without_a_key_are_split_by_weight() {
    let (split, _h) = Split::builder()
        .backend("v1", named("v1"), 3.0)
        .backend("v2", named("v2"), 1.0)
        .sticky_by(|_: &u32| None::<u32>)
        .build()
        .unwrap();
    let mut v2 = 0;
    for i in 0..400 {
        if split.clone().oneshot(i).await.unwrap() == "v2" {
            v2 += 1;
        }
    }
    assert_eq!(v2, 100);
}

#[tokio::test]
async fn weighted_random_follows_weights() {
    let (split, _h) = Split::builder()
        .backend("v1", named("v1"), 80.0)
        .backend("v2", named("v2"), 20.0)
        .pick(PickStrategy::WeightedRandom)
        .build()
        .unwrap();
    let mut v2 = 0;
    for i in 0..10_000 {
        if split.clone().oneshot(i).await.unwrap() == "v2" {
            v2 += 1;
        }
    }
    // 20 % ± 6 standard deviations.
    assert!((1_760..=2_240).contains(&v2), "{v2}");
}

fn http_backend(
    name: &'static str,
) -> tower::util::BoxCloneService<http::Request<()>, &'static str, BoxError> {
    tower::util::BoxCloneService::new(service_fn(move |_: http::Request<()>| async move {
        Ok::<_, BoxError>(name)
    }))
}

#[tokio::test]
async fn unknown_override_falls_back_to_the_split() {
    let (split, _h) = Split::builder()
        .backend("v1", http_backend("v1"), 1.0)
        .backend("v2", http_backend("v2"), 0.0)
        .override_header(http::HeaderName::from_static("x-version"))
        .build()
        .unwrap();
    let req = http::Request::builder()
        .header("x-version", "v9")
        .body(())
        .unwrap();
    assert_eq!(split.clone().oneshot(req).await.unwrap(), "v1");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through the service, with a fresh clone per request (as axum does):
    /// two backends stay within one request of target at every prefix.
    #[test]
    fn split_is_exact_at_every_prefix_across_clones(a in 0u32..=200, b in 1u32..=200) {
        let (split, _h) = Split::builder()
            .backend("a", named("a"), f64::from(a))
            .backend("b", named("b"), f64::from(b))
            .build()
            .unwrap();
        let total = f64::from(a + b);
        let mut count_b = 0u32;
        for n in 1..=(2 * (a + b)) {
            if block_on(split.clone().oneshot(n)).unwrap() == "b" {
                count_b += 1;
            }
            let target = f64::from(n) * f64::from(b) / total;
            prop_assert!((f64::from(count_b) - target).abs() < 1.0);
        }
    }

    /// An override always wins: over weights (zero included) and sticky keys.
    #[test]
    fn override_always_wins(
        weights in prop::collection::vec(0u32..=10, 2..=5),
        target in 0usize..5,
        user in any::<u64>(),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        const NAMES: [&str; 5] = ["v0", "v1", "v2", "v3", "v4"];
        let target = NAMES[target % weights.len()];
        let mut builder = Split::builder()
            .override_with(HeaderOverride::new(http::HeaderName::from_static("x-version")))
            .sticky_header(http::HeaderName::from_static("x-user"))
            .sticky_strategy(StickyStrategy::Auto);
        for (name, w) in NAMES.iter().zip(&weights) {
            builder = builder.backend(*name, http_backend(name), f64::from(*w));
        }
        let (split, handle) = builder.build().unwrap();
        for _ in 0..3 {
            let req = http::Request::builder()
                .header("x-version", target)
                .header("x-user", user.to_string())
                .body(())
                .unwrap();
            prop_assert_eq!(block_on(split.clone().oneshot(req)).unwrap(), target);
        }
        prop_assert_eq!(handle.backend(target).unwrap().overridden, 3);
    }
}

#[tokio::test(start_paused = true)]
async fn completions_and_latency_are_recorded() {
    let slow = service_fn(|fail: bool| async move {
        tokio::time::sleep(std::time::Duration::from_millis(40)).await;
        if fail {
            Err::<(), BoxError>("boom".into())
        } else {
            Ok(())
        }
    });
    for timed in [true, false] {
        let (split, handle) = Split::builder()
            .backend("v1", slow, 1.0)
            .record_latency(timed)
            .build()
            .unwrap();
        for i in 0..10 {
            let _ = split.clone().oneshot(i % 5 == 0).await;
        }
        let v1 = handle.backend("v1").unwrap();
        assert_eq!((v1.requests, v1.completed, v1.errors), (10, 10, 2));
        assert_eq!(v1.error_rate(), 0.2);
        if timed {
            let p50 = v1.latency.quantile(0.5);
            assert!(
                p50 >= std::time::Duration::from_micros(38_700)
                    && p50 <= std::time::Duration::from_micros(41_300),
                "{p50:?}"
            );
        } else {
            assert_eq!(v1.latency.count(), 0);
        }
    }
}

/// Counts how many instances were cloned from it.
struct Counted {
    clones: Arc<AtomicUsize>,
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        self.clones.fetch_add(1, Ordering::SeqCst);
        Self {
            clones: self.clones.clone(),
        }
    }
}

impl Service<u32> for Counted {
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        ready(Ok(()))
    }
}

#[tokio::test]
async fn updates_keep_the_instances_of_surviving_backends() {
    let clones = Arc::new(AtomicUsize::new(0));
    let v1 = Counted {
        clones: clones.clone(),
    };
    let (split, handle) = Split::builder()
        .backend("v1", v1.clone(), 1.0)
        .build()
        .unwrap();
    let base = clones.load(Ordering::SeqCst);
    let mut s = split.clone();
    s.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(
        clones.load(Ordering::SeqCst),
        base + 1,
        "one instance per clone"
    );
    s.ready().await.unwrap().call(2).await.unwrap();
    assert_eq!(clones.load(Ordering::SeqCst), base + 1, "reused");

    // Updates copy prototypes inside the table, but this clone's instance survives.
    handle.set_weight("v1", 3.0).unwrap();
    handle.insert_backend("v2", v1.clone(), 0.0).unwrap();
    let before = clones.load(Ordering::SeqCst);
    for i in 0..5 {
        s.ready().await.unwrap().call(i).await.unwrap();
    }
    assert_eq!(
        clones.load(Ordering::SeqCst),
        before,
        "no new instance after updates"
    );
    assert_eq!(handle.backend("v1").unwrap().requests, 7);
}

#[tokio::test]
async fn spill_waits_on_every_backend_when_none_is_ready() {
    let (v1, v2) = (Probe::new("v1", false), Probe::new("v2", false));
    let (split, handle) = Split::builder()
        .backend("v1", v1.clone(), 9.0)
        .backend("v2", v2.clone(), 1.0)
        .when_not_ready(WhenNotReady::Spill)
        .build()
        .unwrap();
    let mut svc = task::spawn(split);
    assert_pending!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!((v1.polls(), v2.polls()), (1, 1));
    // Whichever backend becomes ready first takes the request.
    v2.set_ready();
    assert!(svc.is_woken());
    assert_ready_ok!(svc.enter(|cx, mut s| s.poll_ready(cx)));
    assert_eq!(svc.call(1).await.unwrap(), "v2");
    assert_eq!(handle.backend("v1").unwrap().spillover, 1);
}
