//! LoadObserver and ObserveLayer: what callers feel, measured at the front
//! door and fed to the autoscaler. Paused tokio time throughout.

mod common;
use common::settle;

use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::{
    Adaptive, Autoscaler, Engine, EngineConfig, LatencySlo, LatencySloConfig, LoadObserver, Policy,
    ReplicaSet, ReplicaSetConfig, Scaler, SignalSource,
};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::balance::p2c::Balance;
use tower::util::{BoxCloneService, BoxService};
use tower::{service_fn, BoxError, ServiceBuilder, ServiceExt};

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

/// A deployment answering `x` after `x` milliseconds.
fn sleeper(observer: &LoadObserver) -> BoxCloneService<u64, u64, BoxError> {
    BoxCloneService::new(
        ServiceBuilder::new()
            .layer(observer.layer())
            .service(service_fn(|x: u64| async move {
                tokio::time::sleep(ms(x)).await;
                Ok::<_, BoxError>(x)
            })),
    )
}

#[tokio::test(start_paused = true)]
async fn quantiles_and_counters_cover_the_interval_since_the_last_sample() {
    let mut observer = LoadObserver::new();
    let svc = sleeper(&observer);
    // 98 requests of 10 ms and 2 of 500 ms.
    let calls: Vec<_> = (0..100u64)
        .map(|i| {
            let svc = svc.clone();
            tokio::spawn(svc.oneshot(if i % 50 == 49 { 500 } else { 10 }))
        })
        .collect();
    for c in calls {
        c.await.unwrap().unwrap();
    }
    let s = observer.sample(Duration::ZERO).unwrap();
    assert_eq!((s.arrivals, s.completions, s.ongoing), (100, 100, 0.0));
    let within = |d: Option<Duration>, want: u64| {
        let d = d.unwrap().as_secs_f64() * 1e3;
        (d - want as f64).abs() <= 0.02 * want as f64
    };
    assert!(within(s.latency_p50, 10), "{s:?}");
    assert!(within(s.latency_p90, 10), "{s:?}");
    assert!(within(s.latency_p99, 500), "{s:?}");
    // The next sample starts afresh.
    let s = observer.sample(Duration::ZERO).unwrap();
    assert_eq!((s.arrivals, s.completions), (0, 0));
    assert_eq!(s.latency_p99, None);
}

#[tokio::test(start_paused = true)]
async fn a_stalled_deployment_still_reports_growing_latency() {
    let mut observer = LoadObserver::new();
    let svc = sleeper(&observer);
    // Ten requests that take an hour: nothing completes for now.
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(svc.clone().oneshot(3_600_000)))
        .collect();
    settle().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = observer.sample(Duration::ZERO).unwrap();
    assert_eq!((s.arrivals, s.completions, s.ongoing), (10, 0, 10.0));
    let p99 = s
        .latency_p99
        .expect("in-flight requests count at their age");
    assert!(p99 >= Duration::from_millis(1980), "{p99:?}");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let later = observer
        .sample(Duration::ZERO)
        .unwrap()
        .latency_p99
        .unwrap();
    assert!(later >= Duration::from_millis(4950), "{later:?}");
    for c in calls {
        c.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn dropped_calls_leave_flight_without_a_latency() {
    let mut observer = LoadObserver::new();
    let svc = sleeper(&observer);
    let call = tokio::spawn(svc.clone().oneshot(1_000));
    settle().await;
    assert_eq!(observer.in_flight(), 1);
    call.abort();
    let _ = call.await;
    assert_eq!(observer.in_flight(), 0);
    assert_eq!(observer.cancelled(), 1);
    let s = observer.sample(Duration::ZERO).unwrap();
    assert_eq!((s.arrivals, s.completions, s.ongoing), (1, 0, 0.0));
    assert_eq!(s.latency_p99, None);
}

/// Latencies of requests, by the time they were sent.
type Log = Arc<Mutex<Vec<(Duration, Duration)>>>;

/// What happened when 150 rps met replicas of 50 rps (one request at a
/// time, 20 ms each, 2 s to start) scaled by `policy`, starting from one.
/// Asserts that one replica was overloaded at first and that callers were
/// under the SLO (100 ms) in the last 15 s.
struct Outcome {
    /// Replicas ready at the end, and the most ever asked for.
    ready: u32,
    peak: u32,
}

async fn scale_150_rps_on_50_rps_replicas(
    policy: Box<dyn Policy>,
    downscale_delay: Duration,
) -> Outcome {
    let set = ReplicaSet::new(ReplicaSetConfig::default().max_replicas(16), || async {
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok::<_, BoxError>(BoxService::new(
            ServiceBuilder::new()
                .concurrency_limit(1)
                .service(service_fn(|x: u64| async move {
                    tokio::time::sleep(ms(20)).await;
                    Ok::<_, BoxError>(x)
                })),
        ))
    })
    .unwrap();
    let observer = LoadObserver::new();
    let engine = Engine::new(
        EngineConfig::default()
            .min_replicas(1)
            .max_replicas(16)
            .upscale_delay(Duration::ZERO)
            .downscale_delay(downscale_delay),
        policy,
    )
    .unwrap();
    let peak = Arc::new(Mutex::new(0u32));
    let seen = Arc::clone(&peak);
    let autoscaler = Autoscaler::new(engine, set.clone())
        .with_source(observer.clone())
        .on_decision(move |d| {
            let mut peak = seen.lock();
            *peak = (*peak).max(d.desired);
            if d.changed() {
                eprintln!("{:?}: {} -> {} ({})", d.at, d.current, d.desired, d.reason);
            }
        });
    let handle = autoscaler.handle();
    let driver = tokio::spawn(autoscaler.run());

    // Callers -> observer -> buffer -> p2c over the set's ready replicas.
    let deployment: BoxCloneService<u64, u64, BoxError> = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(observer.layer())
            .buffer(100_000)
            .service(Balance::new(set.discover())),
    );

    let start = Instant::now();
    let log: Log = Arc::default();
    let mut calls = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_micros(6_667));
    for i in 0..(150 * 60u64) {
        tick.tick().await;
        let (svc, log) = (deployment.clone(), Arc::clone(&log));
        calls.push(tokio::spawn(async move {
            let sent = start.elapsed();
            let answer = svc.oneshot(i).await.expect("every request is answered");
            assert_eq!(answer, i);
            log.lock().push((sent, start.elapsed() - sent));
        }));
    }
    for c in calls {
        c.await.unwrap();
    }
    handle.shutdown();
    driver.await.unwrap();

    let log = log.lock();
    assert_eq!(log.len(), 9_000, "exactly one answer per request");
    let p99_of = |from: u64, to: u64| {
        let mut l: Vec<Duration> = log
            .iter()
            .filter(|(sent, _)| (from..to).contains(&sent.as_secs()))
            .map(|(_, lat)| *lat)
            .collect();
        l.sort();
        l[l.len() * 99 / 100]
    };
    let (early, late) = (p99_of(0, 10), p99_of(45, 60));
    let replicas = set.replicas();
    let peak = *peak.lock();
    eprintln!("p99 first 10 s {early:?}, last 15 s {late:?}; replicas {replicas:?}, peak {peak}");
    assert!(
        early > ms(100),
        "one replica was overloaded at first: {early:?}"
    );
    assert!(
        late <= ms(100),
        "scaled until callers were under the SLO: {late:?}"
    );
    Outcome {
        ready: replicas.ready,
        peak,
    }
}

#[tokio::test(start_paused = true)]
async fn latency_slo_scales_a_replica_set_on_what_callers_feel() {
    let policy = LatencySlo::new(LatencySloConfig::default().target(ms(100))).unwrap();
    let o = scale_150_rps_on_50_rps_replicas(Box::new(policy), Duration::from_secs(60)).await;
    assert!(
        (3..=16).contains(&o.ready),
        "150 rps needs at least 3 replicas of 50 rps: {}",
        o.ready
    );
}

#[tokio::test(start_paused = true)]
async fn the_default_policy_drains_the_backlog_without_overshooting() {
    // The policy holds its own scale-downs, so the engine adds no delay.
    let policy = Adaptive::for_slo(ms(100)).unwrap();
    let o = scale_150_rps_on_50_rps_replicas(Box::new(policy), Duration::ZERO).await;
    // The queue model's need once a saturated replica showed its capacity
    // (50 rps): R = 150 / 50 = 3 replicas for the rate, with square-root
    // headroom 3 + 2·√3 = 6.5, so 7 to keep. On top, while the first
    // replicas start, the backlog (about 250 requests by then) is planned
    // to clear within 2 s of readiness: 5 more, released once it has
    // drained. LatencySlo went to the maximum of 16 here and stayed.
    assert!(
        (3..=7).contains(&o.ready),
        "150 rps on 50 rps replicas keep at most the 7 the model asks for, got {}",
        o.ready
    );
    assert!(
        o.peak <= 12,
        "rate plus backlog need at most 12, peak {}",
        o.peak
    );
}
