//! Tenant and stream lifecycles on the host backend: admission that fails
//! half way, tenant churn, device stalls outside the pool lock, and ranges
//! used on several streams.

use std::sync::mpsc;
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use convoy_gpu_pool::{
    BackendError, GpuPool, HostBackend, HostConfig, PoolConfig, Share, TenantConfig,
};

const MIB: u64 = 1 << 20;
/// Wall-clock guard for operations that must not block: long enough for a
/// loaded machine, short enough that a deadlock fails instead of hanging.
const GUARD: Duration = Duration::from_secs(30);

fn pool(capacity: u64) -> (GpuPool, HostBackend) {
    let host = HostBackend::new(HostConfig::with_capacity(capacity));
    let pool = GpuPool::from_arc(
        Arc::new(host.clone()),
        PoolConfig::default().headroom(1.0),
        None,
    )
    .unwrap();
    (pool, host)
}

/// Runs `f` on its own thread; `None` if it has not returned within
/// [`GUARD`] (the thread is left blocked, the test fails instead of hanging).
fn within<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(GUARD).ok()
}

fn three() -> [TenantConfig; 3] {
    [
        TenantConfig::new("a", Share::fraction(0.2).streams(2)),
        TenantConfig::new("b", Share::fraction(0.2)),
        TenantConfig::new("c", Share::fraction(0.2).streams(2)),
    ]
}

#[test]
fn admission_that_fails_on_a_later_stream_unwinds_without_deadlock() {
    let (pool, host) = pool(64 * MIB);
    // a's two streams and b's succeed, c's first fails.
    host.fail_stream_creation_after(3);
    let p = pool.clone();
    let res = within(move || p.admit_all(three()).map(|v| v.len()))
        .expect("admit_all deadlocked after a stream creation failed");
    let err = res.expect_err("admission must fail");
    assert!(err.is::<BackendError>(), "{err}");
    // All or none: nothing admitted, no stream left behind.
    assert_eq!(pool.admitted_bytes(), 0);
    assert_eq!(host.live_streams(), 0);
    let p = pool.clone();
    let again = within(move || p.admit_all(three()).map(|v| v.len()))
        .expect("admission after a failed one deadlocked");
    assert_eq!(again.unwrap(), 3);
}

#[test]
fn tenant_churn_gives_streams_back() {
    let (pool, host) = pool(64 * MIB);
    // More tenants than the host backend has streams (4096 alive at once).
    for i in 0..10_000 {
        let t = pool
            .tenant(format!("v{i}"), Share::fraction(0.5).streams(2))
            .unwrap();
        let buf = t.alloc(MIB).unwrap();
        drop((buf, t));
    }
    assert_eq!(host.live_streams(), 0);
    assert_eq!(pool.admitted_bytes(), 0);
}

#[test]
fn a_dropped_tenants_stream_lives_until_its_work_completes() {
    let (pool, host) = pool(64 * MIB);
    let t = pool.tenant("t", Share::fraction(0.5)).unwrap();
    let s = t.streams()[0];
    let buf = t.alloc(MIB).unwrap();
    let addr = buf.device_ptr();
    host.hold(s).unwrap();
    host.launch(s, || {}).unwrap();
    drop((buf, t));
    // The range still waits for s, so s (and its id) stay in use.
    assert_eq!(host.live_streams(), 1);
    let u = pool.tenant("u", Share::fraction(0.5)).unwrap();
    assert_ne!(u.streams()[0], s);
    let other = u.alloc(MIB).unwrap();
    assert_ne!(other.device_ptr(), addr);
    host.release(s).unwrap();
    pool.poll_events();
    assert_eq!(host.live_streams(), 1);
    assert_eq!(pool.stats().pending_bytes, 0);
}

#[test]
fn a_stalled_stream_of_one_tenant_does_not_block_another_tenants_alloc() {
    let (pool, host) = pool(256 * MIB);
    let a = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let b = pool.tenant("b", Share::fraction(0.25)).unwrap();
    let sa = a.streams()[0];
    // b has a small chunk with room left.
    let keep = b.alloc(256 << 10).unwrap();
    // a frees a large buffer while a long kernel runs on its stream.
    let buf = a.alloc(4 * MIB).unwrap();
    host.stall(sa).unwrap();
    host.launch(sa, || {}).unwrap();
    drop(buf);
    // a's next chunk fails: the pool waits for a's stream to reclaim the
    // pending range, which blocks until the kernel ends.
    host.fail_next_chunk_allocs(1);
    let a2 = a.clone();
    let blocked = thread::spawn(move || a2.alloc(40 * MIB).map(|b| b.consumed()));
    assert!(
        host.wait_for_blocked_sync(sa, GUARD),
        "a's allocation never synchronized its stream"
    );
    // Meanwhile b allocates from its chunk.
    let b2 = b.clone();
    let res = within(move || b2.alloc(256 << 10).map(|b| b.consumed()));
    host.release(sa).unwrap();
    let a_res = blocked.join().expect("a's allocation panicked");
    assert!(
        res.is_some(),
        "b's allocation waited for a's stalled stream"
    );
    assert!(res.unwrap().is_ok());
    assert!(a_res.is_ok(), "{:?}", a_res.err());
    drop(keep);
}

#[test]
fn a_tenant_buffer_waits_for_every_stream_of_the_tenant() {
    let (pool, host) = pool(64 * MIB);
    let t = pool.tenant("t", Share::fraction(0.4).streams(2)).unwrap();
    let u = pool.tenant("u", Share::fraction(0.4)).unwrap();
    let s1 = t.streams()[1];
    // Weights allocated for the tenant, read by a kernel on its second stream.
    let weights = t.alloc(2 * MIB).unwrap();
    let addr = weights.device_ptr();
    host.hold(s1).unwrap();
    host.launch(s1, || {}).unwrap();
    drop(weights);
    assert_eq!(t.used(), 0, "a dropped buffer leaves the quota at once");
    // The range must not go to anyone before s1's work completes.
    let other = u.alloc(2 * MIB).unwrap();
    assert_ne!(other.device_ptr(), addr);
    let mine = t.alloc_on(t.streams()[0], 2 * MIB).unwrap();
    assert_ne!(mine.device_ptr(), addr);
    drop((other, mine));
    host.release(s1).unwrap();
    pool.poll_events();
    assert_eq!(pool.stats().allocated_bytes, 0);
    assert_eq!(pool.stats().pending_bytes, 0);
}

#[tokio::test]
async fn a_lease_allocates_on_its_own_stream() {
    let (pool, host) = pool(64 * MIB);
    let t = pool.tenant("t", Share::fraction(0.4).streams(2)).unwrap();
    let u = pool.tenant("u", Share::fraction(0.4)).unwrap();
    let first = t.lease().await.unwrap();
    let second = t.lease().await.unwrap();
    assert_ne!(first.stream(), second.stream());
    let buf = second.alloc(2 * MIB).unwrap();
    assert_eq!(buf.stream(), second.stream());
    assert!(!buf.is_shared());
    let addr = buf.device_ptr();
    // A kernel on the lease's stream still uses the buffer when it drops.
    host.hold(second.stream()).unwrap();
    host.launch(second.stream(), || {}).unwrap();
    drop(buf);
    // No other stream gets the range; the lease's own stream may, at once.
    let other = u.alloc(2 * MIB).unwrap();
    assert_ne!(other.device_ptr(), addr);
    let on_first = first.alloc(2 * MIB).unwrap();
    assert_ne!(on_first.device_ptr(), addr);
    let again = second.alloc(2 * MIB).unwrap();
    assert_eq!(again.device_ptr(), addr);
    drop((other, on_first, again));
    host.release(second.stream()).unwrap();
    pool.poll_events();
    assert_eq!(pool.stats().pending_bytes, 0);
}
