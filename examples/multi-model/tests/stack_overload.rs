//! Overload of the crates alone, in paused tokio time (`overload.rs`
//! loads the server binary in real time): a sticky 90/10 `Split` over two
//! versions, each a p2c `Balancer` over a `ReplicaSet` of rejecting
//! batchers in front of a model with a known cost. A million requests
//! arrive: first at three times the stack's capacity, then at half of it. The promises under overload:
//! - every request gets exactly one answer (none lost, none twice);
//! - the excess is refused at once (`QueueFull`), not after queueing;
//! - an admitted request finishes within its queue timeout plus one batch;
//! - while overloaded the stack still serves at its capacity;
//! - within 5 s of the load dropping, every request succeeds again.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::{ReplicaSet, ReplicaSetConfig, Scaler};
use convoy_batcher::{batch_fn, Batch, BatchConfig, DeadlineExceeded, OverflowPolicy, QueueFull};
use convoy_router::balance::BalanceConfig;
use convoy_router::{Balancer, Split};
use parking_lot::Mutex;
use tokio::time::Instant;
use tower::{BoxError, ServiceExt};

/// A batch costs `FIXED + PER_ITEM · n` of model time.
const FIXED: Duration = Duration::from_millis(10);
const PER_ITEM: Duration = Duration::from_millis(1);
const MAX_BATCH: usize = 16;
const REPLICAS_PER_VERSION: u32 = 2;
const QUEUE_TIMEOUT: Duration = Duration::from_millis(200);

/// Items per second of one replica at full batches.
fn replica_capacity() -> f64 {
    MAX_BATCH as f64 / (FIXED + PER_ITEM * MAX_BATCH as u32).as_secs_f64()
}

fn replica(version: &'static str, id: u8) -> Result<Batch<u64, u8>, BoxError> {
    let config = BatchConfig::builder()
        .name(version)
        .max_batch_size(MAX_BATCH)
        .queue_capacity(4 * MAX_BATCH)
        .queue_timeout(QUEUE_TIMEOUT)
        .overflow(OverflowPolicy::Reject)
        .build()?;
    Ok(batch_fn(config, move |batch: Vec<u64>| async move {
        tokio::time::sleep(FIXED + PER_ITEM * batch.len() as u32).await;
        Ok::<_, BoxError>(vec![id; batch.len()])
    }))
}

type Version = Balancer<u64, u8>;

async fn version(name: &'static str, id: u8) -> (ReplicaSet<Batch<u64, u8>>, Version) {
    let replicas = ReplicaSet::new(
        ReplicaSetConfig::default().max_replicas(REPLICAS_PER_VERSION),
        move || std::future::ready(replica(name, id)),
    )
    .unwrap();
    replicas.scale_to(REPLICAS_PER_VERSION).await.unwrap();
    let balancer = Balancer::new(replicas.discover(), BalanceConfig::default()).unwrap();
    (replicas, balancer)
}

#[derive(Debug, Default)]
struct Outcomes {
    ok: AtomicU64,
    refused: AtomicU64,
    expired: AtomicU64,
    other: AtomicU64,
    /// Milliseconds from arrival to refusal, per refused request.
    refusal_ms: Mutex<Vec<u64>>,
    /// Milliseconds from arrival to answer, per admitted request.
    admitted_ms: Mutex<Vec<u64>>,
    /// Successful answers per second of the run.
    ok_per_second: Mutex<Vec<u64>>,
    /// Arrival time (since the start) of every request that failed.
    failed_at: Mutex<Vec<Duration>>,
}

#[tokio::test(start_paused = true)]
async fn a_million_requests_at_three_times_capacity_are_each_answered_once() {
    let total: u64 = std::env::var("CONVOY_OVERLOAD_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let (_r1, v1) = version("v1", 1).await;
    let (_r2, v2) = version("v2", 2).await;
    let (split, _handle) = Split::builder()
        .backend("v1", v1, 90.0)
        .backend("v2", v2, 10.0)
        .sticky_by(|user: &u64| Some(*user % 1000))
        .build()
        .unwrap();
    // Let the balancers discover their replicas.
    tokio::time::sleep(Duration::from_millis(10)).await;

    // The split is sticky, so the busier version bounds what the stack
    // serves: v1 takes ~90 % of users on its 2 replicas.
    let capacity = replica_capacity() * f64::from(REPLICAS_PER_VERSION) / 0.9;
    let overload_rate = 3.0 * capacity;
    let calm_rate = 0.5 * capacity;
    // Three quarters of the requests arrive overloaded, the rest calm.
    let overloaded = total * 3 / 4;
    let overload_secs = overloaded as f64 / overload_rate;
    let run_secs = overload_secs + (total - overloaded) as f64 / calm_rate;

    let outcomes = Arc::new(Outcomes::default());
    outcomes
        .ok_per_second
        .lock()
        .resize(run_secs.ceil() as usize + 2, 0);
    let start = Instant::now();
    let tick = Duration::from_millis(1);
    let mut sent = 0u64;
    let mut tasks = tokio::task::JoinSet::new();
    let mut owed = 0.0;
    while sent < total {
        let rate = if sent < overloaded {
            overload_rate
        } else {
            calm_rate
        };
        owed += rate * tick.as_secs_f64();
        while owed >= 1.0 && sent < total {
            owed -= 1.0;
            let (split, outcomes) = (split.clone(), Arc::clone(&outcomes));
            let user = sent.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 20;
            sent += 1;
            tasks.spawn(async move {
                let arrived = Instant::now();
                let result = split.oneshot(user).await;
                let took = arrived.elapsed().as_millis() as u64;
                match result {
                    Ok(_) => {
                        outcomes.ok.fetch_add(1, Ordering::Relaxed);
                        outcomes.admitted_ms.lock().push(took);
                        let second = (Instant::now() - start).as_secs() as usize;
                        if let Some(n) = outcomes.ok_per_second.lock().get_mut(second) {
                            *n += 1;
                        }
                    }
                    Err(e) if e.is::<QueueFull>() => {
                        outcomes.failed_at.lock().push(arrived - start);
                        outcomes.refused.fetch_add(1, Ordering::Relaxed);
                        outcomes.refusal_ms.lock().push(took);
                    }
                    Err(e) if e.is::<DeadlineExceeded>() => {
                        outcomes.failed_at.lock().push(arrived - start);
                        outcomes.expired.fetch_add(1, Ordering::Relaxed);
                        outcomes.admitted_ms.lock().push(took);
                    }
                    Err(_) => {
                        outcomes.other.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        }
        // Reap finished tasks so the set stays small.
        while tasks.try_join_next().is_some() {}
        tokio::time::sleep(tick).await;
    }
    let load_dropped_at = start + Duration::from_secs_f64(overload_secs);
    while let Some(joined) = tasks.join_next().await {
        joined.expect("no request task panics");
    }

    let o = &outcomes;
    let (ok, refused, expired, other) = (
        o.ok.load(Ordering::Relaxed),
        o.refused.load(Ordering::Relaxed),
        o.expired.load(Ordering::Relaxed),
        o.other.load(Ordering::Relaxed),
    );
    // Exactly one answer each.
    assert_eq!(ok + refused + expired + other, total);
    assert_eq!(other, 0, "unexpected errors");
    assert!(refused > 0, "three times capacity must refuse something");

    // Refusals are immediate.
    let mut refusal = o.refusal_ms.lock().clone();
    refusal.sort_unstable();
    let p99 = refusal[refusal.len() * 99 / 100];
    assert!(p99 < 10, "refusal p99 {p99} ms");

    // Admitted requests finish within the queue timeout plus one full batch.
    let bound = (QUEUE_TIMEOUT + FIXED + PER_ITEM * MAX_BATCH as u32).as_millis() as u64;
    let worst = o.admitted_ms.lock().iter().copied().max().unwrap_or(0);
    assert!(
        worst <= bound,
        "an admitted request took {worst} ms > {bound} ms"
    );

    // While overloaded the stack serves what its replicas can: v1 at its
    // capacity, v2 its whole (smaller) share (whole seconds in the middle of
    // the overload).
    let v1_capacity = replica_capacity() * f64::from(REPLICAS_PER_VERSION);
    let can_serve = v1_capacity + (0.1 * overload_rate).min(v1_capacity);
    let per_second = o.ok_per_second.lock().clone();
    let overload_whole = overload_secs.floor() as usize;
    let served: Vec<u64> = per_second[1..overload_whole.saturating_sub(1).max(2)].to_vec();
    let mean = served.iter().sum::<u64>() as f64 / served.len() as f64;
    assert!(
        mean >= 0.9 * can_serve,
        "served {mean:.0}/s while overloaded, the replicas can serve {can_serve:.0}/s"
    );

    // Within 5 s of the drop, the calm load is served in full: nothing
    // that arrives after that fails.
    let recovered = load_dropped_at + Duration::from_secs(5) - start;
    let late = o
        .failed_at
        .lock()
        .iter()
        .filter(|&&t| t >= recovered)
        .count();
    assert_eq!(
        late, 0,
        "{late} requests failed more than 5 s after the load dropped"
    );
    let last_failure = o.failed_at.lock().iter().copied().max().unwrap_or_default();
    println!(
        "overload: {total} requests, {ok} ok, {refused} refused (p99 {p99} ms), {expired} expired; \
         saturating at {capacity:.0}/s offered, served {mean:.0}/s of a possible {can_serve:.0}/s while offered {overload_rate:.0}/s; \
         worst admitted latency {worst} ms (bound {bound} ms); last failure {:.2} s after the load dropped",
        last_failure.as_secs_f64() - overload_secs
    );
}
