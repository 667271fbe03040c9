//! Shadow: the primary path is never slowed or failed by the shadow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_router::shadow::{
    clone_http_request, CompareFn, ShadowConfig, ShadowError, ShadowLayer,
};
use convoy_router::Split;
use parking_lot::Mutex;
use proptest::prelude::*;
use tokio::time::Instant;
use tower::{service_fn, BoxError, Layer, ServiceExt};

fn primary(
) -> impl tower::Service<u32, Response = u32, Error = BoxError, Future = impl Send> + Clone {
    service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        Ok::<_, BoxError>(x * 2)
    })
}

/// A shadow backend that is never ready.
#[derive(Clone)]
struct NeverReady;

impl tower::Service<u32> for NeverReady {
    type Response = u32;
    type Error = BoxError;
    type Future = std::future::Ready<Result<u32, BoxError>>;

    fn poll_ready(
        &mut self,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), BoxError>> {
        std::task::Poll::Pending
    }

    fn call(&mut self, x: u32) -> Self::Future {
        std::future::ready(Ok(x))
    }
}

#[derive(Clone, Copy, Debug)]
enum ShadowBehaviour {
    Hang,
    Slow,
    Fail,
    NeverReady,
}

fn shadow(
    behaviour: ShadowBehaviour,
    calls: Arc<AtomicUsize>,
) -> tower::util::BoxCloneService<u32, u32, BoxError> {
    match behaviour {
        ShadowBehaviour::NeverReady => tower::util::BoxCloneService::new(NeverReady),
        b => tower::util::BoxCloneService::new(service_fn(move |x: u32| {
            calls.fetch_add(1, Ordering::SeqCst);
            async move {
                match b {
                    ShadowBehaviour::Hang => futures::future::pending().await,
                    ShadowBehaviour::Slow => {
                        tokio::time::sleep(Duration::from_secs(10)).await;
                        Ok(x)
                    }
                    _ => Err::<u32, BoxError>("shadow exploded".into()),
                }
            }
        })),
    }
}

#[tokio::test(start_paused = true)]
async fn bounded_in_flight_drops_and_counts_excess_mirrors() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = ShadowConfig {
        fraction: 1.0,
        max_in_flight: 2,
        timeout: Duration::from_secs(60),
        ..ShadowConfig::default()
    };
    let layer = ShadowLayer::new(shadow(ShadowBehaviour::Hang, calls.clone()), config).unwrap();
    let svc = layer.layer(primary());
    for x in 0..10 {
        assert_eq!(svc.clone().oneshot(x).await.unwrap(), x * 2);
    }
    let stats = layer.stats();
    assert_eq!((stats.mirrored, stats.dropped), (2, 8));
    // The hung shadows are abandoned at the timeout and free their permits.
    tokio::time::sleep(Duration::from_secs(61)).await;
    assert_eq!(layer.stats().timed_out, 2);
    svc.clone().oneshot(1).await.unwrap();
    assert_eq!(layer.stats().mirrored, 3);
}

#[tokio::test(start_paused = true)]
async fn fraction_is_exact() {
    let calls = Arc::new(AtomicUsize::new(0));
    let config = ShadowConfig {
        fraction: 0.1,
        ..ShadowConfig::default()
    };
    let layer = ShadowLayer::new(shadow(ShadowBehaviour::Fail, calls.clone()), config).unwrap();
    let svc = layer.layer(primary());
    for x in 0..200 {
        svc.clone().oneshot(x).await.unwrap();
    }
    tokio::task::yield_now().await;
    assert_eq!(layer.stats().mirrored, 20);
    assert_eq!(calls.load(Ordering::SeqCst), 20);
    assert_eq!(layer.stats().failed, 20);
}

#[tokio::test(start_paused = true)]
async fn compare_hook_gets_both_results() {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let candidate = service_fn(|x: u32| async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if x == 3 {
            Err::<u32, BoxError>("bad".into())
        } else {
            Ok(x + x)
        }
    });
    let layer = ShadowLayer::new(candidate, ShadowConfig::default())
        .unwrap()
        .compare(CompareFn::new(
            move |primary: Result<u32, String>, shadow: Result<u32, ShadowError>| {
                s.lock().push((primary.unwrap(), shadow.ok()));
            },
        ));
    let svc = layer.layer(primary());
    for x in 1..=3 {
        svc.clone().oneshot(x).await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut seen = seen.lock().clone();
    seen.sort();
    assert_eq!(seen, vec![(2, Some(2)), (4, Some(4)), (6, None)]);
}

#[tokio::test(start_paused = true)]
async fn shadow_of_a_split_with_http_requests() {
    let backend = |v: &'static str| {
        service_fn(move |req: http::Request<String>| async move {
            Ok::<_, BoxError>(format!("{v}:{}", req.body()))
        })
    };
    let (split, _h) = Split::builder()
        .backend("v1", backend("v1"), 1.0)
        .build()
        .unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    let mirror = service_fn(move |req: http::Request<String>| {
        g.lock().push((
            req.uri().to_string(),
            req.headers()["x-a"].clone(),
            req.body().clone(),
        ));
        async { Ok::<_, BoxError>(()) }
    });
    let layer =
        ShadowLayer::with_cloner(mirror, ShadowConfig::default(), clone_http_request).unwrap();
    let svc = layer.layer(split);
    let req = http::Request::builder()
        .uri("/infer")
        .header("x-a", "1")
        .body("hello".to_string())
        .unwrap();
    // The shadowed split is Send and can be spawned (as axum does).
    let rsp = tokio::spawn(svc.oneshot(req)).await.unwrap().unwrap();
    assert_eq!(rsp, "v1:hello");
    tokio::task::yield_now().await;
    assert_eq!(got.lock()[0].0, "/infer");
    assert_eq!(got.lock()[0].2, "hello");
}

#[test]
fn invalid_config_is_rejected() {
    let calls = Arc::new(AtomicUsize::new(0));
    for config in [
        ShadowConfig {
            fraction: 1.5,
            ..ShadowConfig::default()
        },
        ShadowConfig {
            fraction: f64::NAN,
            ..ShadowConfig::default()
        },
        ShadowConfig {
            max_in_flight: 0,
            ..ShadowConfig::default()
        },
    ] {
        assert!(
            ShadowLayer::<_, u32>::new(shadow(ShadowBehaviour::Fail, calls.clone()), config)
                .is_err()
        );
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// A slow, hung, failing or never-ready shadow changes neither the
    /// primary's response nor its latency (measured on the paused clock:
    /// exactly the primary's own 5 ms).
    #[test]
    fn shadow_never_slows_or_fails_the_primary(
        behaviour in prop::sample::select(vec![
            ShadowBehaviour::Hang, ShadowBehaviour::Slow, ShadowBehaviour::Fail, ShadowBehaviour::NeverReady,
        ]),
        fraction in 0.0f64..=1.0,
        max_in_flight in 1usize..4,
        xs in prop::collection::vec(any::<u16>(), 1..20),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        rt.block_on(async {
            let calls = Arc::new(AtomicUsize::new(0));
            let config = ShadowConfig { fraction, max_in_flight, ..ShadowConfig::default() };
            let svc = ShadowLayer::new(shadow(behaviour, calls), config).unwrap().layer(primary());
            for x in xs {
                let x = u32::from(x);
                let start = Instant::now();
                let rsp = svc.clone().oneshot(x).await;
                prop_assert_eq!(rsp.unwrap(), x * 2);
                prop_assert_eq!(start.elapsed(), Duration::from_millis(5));
            }
            Ok(())
        })?;
    }
}
