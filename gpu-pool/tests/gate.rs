//! The weighted-fair compute gate, in paused tokio time.

use std::time::Duration;

use convoy_gpu_pool::{
    ConfigError, GpuPool, HostBackend, PoolConfig, Priority, Share, Tenant, WaitQueueFull,
};
use tokio::task::JoinHandle;
use tokio_test::{assert_pending, assert_ready};

fn pool(slots: u32) -> GpuPool {
    GpuPool::new(
        HostBackend::default(),
        PoolConfig::default().compute_slots(slots),
    )
    .unwrap()
}

/// `workers` tasks that each take a slot, hold it for `hold`, and repeat.
fn saturate(t: &Tenant, workers: usize, hold: Duration) -> Vec<JoinHandle<()>> {
    (0..workers)
        .map(|_| {
            let t = t.clone();
            tokio::spawn(async move {
                loop {
                    let permit = t.acquire_slot().await.unwrap();
                    tokio::time::sleep(hold).await;
                    drop(permit);
                }
            })
        })
        .collect()
}

fn busy(ts: &[&Tenant]) -> Vec<f64> {
    ts.iter().map(|t| t.stats().slot_busy_ns as f64).collect()
}

fn shares(before: &[f64], after: &[f64]) -> Vec<f64> {
    let d: Vec<f64> = after.iter().zip(before).map(|(a, b)| a - b).collect();
    let total: f64 = d.iter().sum();
    d.iter().map(|x| x / total).collect()
}

fn assert_within_5pct(measured: &[f64], expected: &[f64]) {
    eprintln!("slot time shares {measured:?}, weights give {expected:?}");
    for (m, e) in measured.iter().zip(expected) {
        assert!(
            (m - e).abs() <= 0.05 * e,
            "measured shares {measured:?}, expected {expected:?}"
        );
    }
}

#[tokio::test(start_paused = true)]
async fn weights_1_2_3_under_saturation() {
    let pool = pool(4);
    let ts: Vec<Tenant> = (1..=3)
        .map(|w| {
            pool.tenant(format!("t{w}"), Share::fraction(0.1).compute_weight(w))
                .unwrap()
        })
        .collect();
    let tasks: Vec<_> = ts
        .iter()
        .flat_map(|t| saturate(t, 8, Duration::from_millis(10)))
        .collect();
    let refs: Vec<&Tenant> = ts.iter().collect();
    tokio::time::sleep(Duration::from_millis(500)).await; // warm up
    let before = busy(&refs);
    tokio::time::sleep(Duration::from_secs(20)).await;
    let s = shares(&before, &busy(&refs));
    assert_within_5pct(&s, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]);
    // Work conserving: all slots were busy all the time.
    let total: f64 = busy(&refs).iter().zip(&before).map(|(a, b)| a - b).sum();
    assert!(total >= 0.99 * 4.0 * 20e9, "slots idle: {total}");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn an_idle_tenants_share_goes_to_the_busy_ones() {
    let pool = pool(4);
    let ts: Vec<Tenant> = (1..=3)
        .map(|w| {
            pool.tenant(format!("t{w}"), Share::fraction(0.1).compute_weight(w))
                .unwrap()
        })
        .collect();
    // t3 (weight 3) is idle: t1 and t2 split everything 1:2.
    let mut tasks: Vec<_> = ts[..2]
        .iter()
        .flat_map(|t| saturate(t, 8, Duration::from_millis(10)))
        .collect();
    let refs: Vec<&Tenant> = ts.iter().collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = busy(&refs);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let after = busy(&refs);
    let s = shares(&before, &after);
    assert_eq!(s[2], 0.0);
    assert_within_5pct(&s[..2], &[1.0 / 3.0, 2.0 / 3.0]);
    let total: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    assert!(
        total >= 0.99 * 4.0 * 10e9,
        "idle share was not redistributed"
    );

    // When t3 wakes up it gets its weight, not a burst from banked credit.
    tasks.extend(saturate(&ts[2], 8, Duration::from_millis(10)));
    let before = busy(&refs);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let s = shares(&before, &busy(&refs));
    assert_within_5pct(&s, &[1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0]);
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn time_not_grants_is_shared() {
    // Equal weights, but t1 holds its slots twice as long: it gets half as
    // many grants and the same slot time.
    let pool = pool(2);
    let t1 = pool.tenant("t1", Share::fraction(0.1)).unwrap();
    let t2 = pool.tenant("t2", Share::fraction(0.1)).unwrap();
    let mut tasks = saturate(&t1, 4, Duration::from_millis(20));
    tasks.extend(saturate(&t2, 4, Duration::from_millis(10)));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = busy(&[&t1, &t2]);
    let g0 = (t1.stats().slot_grants, t2.stats().slot_grants);
    tokio::time::sleep(Duration::from_secs(10)).await;
    let s = shares(&before, &busy(&[&t1, &t2]));
    assert_within_5pct(&s, &[0.5, 0.5]);
    let g1 = (t1.stats().slot_grants - g0.0, t2.stats().slot_grants - g0.1);
    assert!((g1.1 as f64 / g1.0 as f64 - 2.0).abs() < 0.1, "{g1:?}");
    for t in tasks {
        t.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn priority_orders_a_tenants_waiting_work() {
    let pool = pool(1);
    let t = pool.tenant("t", Share::fraction(0.1)).unwrap();
    let held = t.acquire_slot().await.unwrap();
    let mut low = tokio_test::task::spawn(t.acquire_slot_with(Priority::Low));
    let mut normal = tokio_test::task::spawn(t.acquire_slot_with(Priority::Normal));
    let mut high = tokio_test::task::spawn(t.acquire_slot_with(Priority::High));
    assert_pending!(low.poll());
    assert_pending!(normal.poll());
    assert_pending!(high.poll());
    assert_eq!(t.slot_usage().waiting, 3);
    drop(held);
    let h = assert_ready!(high.poll()).unwrap();
    assert_pending!(low.poll());
    drop(h);
    let n = assert_ready!(normal.poll()).unwrap();
    drop(n);
    let l = assert_ready!(low.poll()).unwrap();
    drop(l);
    assert_eq!(pool.free_compute_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_dropped_acquire_gives_no_slot_away() {
    let pool = pool(1);
    let t = pool.tenant("t", Share::fraction(0.1)).unwrap();
    let held = t.acquire_slot().await.unwrap();
    let mut waiting = tokio_test::task::spawn(t.acquire_slot());
    assert_pending!(waiting.poll());
    drop(waiting);
    assert_eq!(t.slot_usage().waiting, 0);
    drop(held);
    assert_eq!(pool.free_compute_slots(), 1);

    // Dropped after the slot was handed to it but before it was polled:
    // the slot comes back too.
    let held = t.acquire_slot().await.unwrap();
    let mut waiting = tokio_test::task::spawn(t.acquire_slot());
    assert_pending!(waiting.poll());
    drop(held);
    assert_eq!(pool.free_compute_slots(), 0, "handed to the waiter");
    drop(waiting);
    assert_eq!(pool.free_compute_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_lone_tenant_uses_every_slot() {
    let pool = pool(3);
    let t = pool.tenant("t", Share::fraction(0.1)).unwrap();
    let a = t.lease().await.unwrap();
    let b = t.lease().await.unwrap();
    let c = t.lease().await.unwrap();
    assert_eq!(pool.free_compute_slots(), 0);
    let mut d = tokio_test::task::spawn(t.lease());
    assert_pending!(d.poll());
    drop((a, b, c));
    let d = assert_ready!(d.poll()).unwrap();
    assert_eq!(d.lease().tenant(), "t");
}

#[tokio::test(start_paused = true)]
async fn a_request_waiting_when_its_tenant_is_dropped_stays_metered() {
    let pool = pool(1);
    let a = pool.tenant("a", Share::fraction(0.1)).unwrap();
    let b = pool.tenant("b", Share::fraction(0.1)).unwrap();
    let held = a.acquire_slot().await.unwrap();
    let mut waiting = tokio_test::task::spawn(b.acquire_slot());
    assert_pending!(waiting.poll());
    // The last handle of b goes while its request waits: the request still
    // waits for a slot of the gate, it gets none outside of it.
    drop(b);
    assert_pending!(waiting.poll());
    assert_eq!(pool.free_compute_slots(), 0);
    drop(held);
    let permit = assert_ready!(waiting.poll()).unwrap();
    assert_eq!(pool.free_compute_slots(), 0, "the slot is b's now");
    drop(permit);
    assert_eq!(pool.free_compute_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn waiting_requests_are_bounded_per_tenant() {
    let pool = GpuPool::new(
        HostBackend::default(),
        PoolConfig::default()
            .compute_slots(1)
            .max_waiting_acquires(2),
    )
    .unwrap();
    let t = pool.tenant("t", Share::fraction(0.1)).unwrap();
    let u = pool.tenant("u", Share::fraction(0.1)).unwrap();
    let held = t.acquire_slot().await.unwrap();
    let mut w1 = tokio_test::task::spawn(t.acquire_slot());
    let mut w2 = tokio_test::task::spawn(t.lease());
    assert_pending!(w1.poll());
    assert_pending!(w2.poll());
    // A third waiter is refused at once, with a typed error.
    let err = assert_ready!(tokio_test::task::spawn(t.acquire_slot()).poll()).unwrap_err();
    let full = err.downcast_ref::<WaitQueueFull>().expect("WaitQueueFull");
    assert_eq!((full.tenant(), full.limit()), ("t", 2));
    assert!(assert_ready!(tokio_test::task::spawn(t.lease()).poll()).is_err());
    assert_eq!(t.slot_usage().waiting, 2);
    // The limit is per tenant: u still queues.
    let mut uw = tokio_test::task::spawn(u.acquire_slot());
    assert_pending!(uw.poll());
    // A waiter that leaves makes room again.
    drop(w1);
    let mut w3 = tokio_test::task::spawn(t.acquire_slot());
    assert_pending!(w3.poll());
    drop((held, w2, w3, uw));
    assert_eq!(pool.free_compute_slots(), 1);
}

#[test]
fn a_zero_wait_limit_is_refused_at_construction() {
    let err = GpuPool::new(
        HostBackend::default(),
        PoolConfig::default().max_waiting_acquires(0),
    )
    .unwrap_err();
    assert!(err.is::<ConfigError>(), "{err}");
}
