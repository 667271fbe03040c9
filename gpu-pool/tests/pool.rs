//! Admission, quotas, out-of-memory, stream ordering and footprints on the
//! host backend.

use std::sync::Arc;

use convoy_gpu_pool::{
    AllocatorConfig, Backend, BackendKind, ConfigError, ConfigErrorKind, DeviceOutOfMemory,
    FootprintExceeded, GpuPool, HostBackend, HostConfig, MemoryShare, Overcommitted, PoolConfig,
    Priority, QuotaExceeded, Share, TenantConfig,
};
use tower::BoxError;

const MIB: u64 = 1 << 20;

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

fn kind(e: &BoxError) -> ConfigErrorKind {
    e.downcast_ref::<ConfigError>()
        .expect("config error")
        .kind()
}

#[test]
fn three_tenants_at_a_third_each_are_isolated() {
    let (pool, _) = pool(300 * MIB);
    let [a, b, c]: [_; 3] = pool
        .admit_all(["resnet", "bert", "yolo"].map(|n| TenantConfig::new(n, Share::fraction(0.33))))
        .unwrap()
        .try_into()
        .unwrap();
    assert_eq!(a.quota(), (300.0 * MIB as f64 * 0.33) as u64);
    // resnet fills its quota with 20 MiB buffers...
    let mut held = Vec::new();
    let err = loop {
        match a.alloc(20 * MIB) {
            Ok(b) => held.push(b),
            Err(e) => break e,
        }
    };
    let q = err.downcast_ref::<QuotaExceeded>().expect("quota error");
    assert_eq!(q.tenant(), "resnet");
    assert_eq!(q.limit(), a.quota());
    assert!(q.used() + q.requested() > q.limit());
    assert!(a.used() <= a.quota());
    assert_eq!(a.stats().quota_rejections, 1);
    // ...and bert and yolo still get all of theirs.
    let bb = b.alloc(b.quota() - MIB).unwrap();
    let cc = c.alloc(c.quota() - MIB).unwrap();
    assert!(b.used() <= b.quota() && c.used() <= c.quota());
    drop((held, bb, cc));
    assert_eq!(a.used() + b.used() + c.used(), 0);
}

#[test]
fn overcommit_is_refused_naming_the_tenants() {
    let (pool, _) = pool(100 * MIB);
    let _a = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let _b = pool.tenant("b", Share::bytes(30 * MIB)).unwrap();
    let err = pool.tenant("c", Share::fraction(0.25)).unwrap_err();
    let o = err.downcast_ref::<Overcommitted>().expect("overcommit");
    assert_eq!(o.tenants(), ["a", "b", "c"]);
    assert_eq!(o.budget(), 100 * MIB);
    assert!(o.requested() > o.budget());
    assert!(err.to_string().contains("[a, b, c]"));
    // admit_all is all or none.
    let err = pool
        .admit_all([
            TenantConfig::new("d", Share::fraction(0.1)),
            TenantConfig::new("e", Share::fraction(0.2)),
        ])
        .unwrap_err();
    assert!(err.is::<Overcommitted>());
    assert_eq!(pool.admitted_bytes(), 80 * MIB);
    pool.tenant("d", Share::fraction(0.1)).unwrap();
}

#[test]
fn dropping_a_tenant_returns_its_reservation() {
    let (pool, _) = pool(100 * MIB);
    let a = pool.tenant("a", Share::fraction(0.8)).unwrap();
    let buf = a.alloc(MIB).unwrap();
    assert!(pool.tenant("b", Share::fraction(0.5)).is_err());
    drop(a);
    // The buffer still holds the tenant.
    assert!(pool.tenant("b", Share::fraction(0.5)).is_err());
    drop(buf);
    pool.tenant("b", Share::fraction(0.5)).unwrap();
    // And its name is free again.
    pool.tenant("a", Share::fraction(0.5)).unwrap();
}

#[test]
fn bad_shares_are_typed_errors() {
    let (pool, _) = pool(100 * MIB);
    for f in [0.0, -0.1, 1.01, f64::NAN, f64::INFINITY] {
        let e = pool.tenant("x", Share::fraction(f)).unwrap_err();
        assert_eq!(kind(&e), ConfigErrorKind::InvalidMemoryShare, "{f}");
    }
    let e = pool.tenant("x", Share::bytes(0)).unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::InvalidMemoryShare);
    let e = pool
        .tenant("x", Share::fraction(0.1).streams(0))
        .unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::InvalidStreams);
    let e = pool
        .tenant("x", Share::fraction(0.1).compute_weight(0))
        .unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::InvalidComputeWeight);
    let e = pool.tenant("", Share::fraction(0.1)).unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::EmptyName);
    let _x = pool.tenant("x", Share::fraction(0.1)).unwrap();
    let e = pool.tenant("x", Share::fraction(0.1)).unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::DuplicateTenant);
    let e = pool
        .admit_all([
            TenantConfig::new("y", Share::fraction(0.1)),
            TenantConfig::new("y", Share::fraction(0.1)),
        ])
        .unwrap_err();
    assert_eq!(kind(&e), ConfigErrorKind::DuplicateTenant);

    let host = HostBackend::default();
    for cfg in [
        PoolConfig::default().headroom(0.0),
        PoolConfig::default().headroom(1.5),
        PoolConfig::default().compute_slots(0),
        PoolConfig::default().allocator(AllocatorConfig::default().alignment(3)),
    ] {
        let e = GpuPool::new(host.clone(), cfg).unwrap_err();
        assert!(e.is::<ConfigError>());
    }
}

#[test]
fn config_round_trips_through_serde() {
    let cfg = TenantConfig::new(
        "bert",
        Share::fraction(0.33)
            .compute_weight(2)
            .priority(Priority::High)
            .streams(2),
    );
    let json = serde_json::to_string(&cfg).unwrap();
    assert_eq!(serde_json::from_str::<TenantConfig>(&json).unwrap(), cfg);
    let parsed: TenantConfig =
        serde_json::from_str(r#"{"name":"x","share":{"memory":{"bytes":1024}}}"#).unwrap();
    assert_eq!(parsed.share.memory, MemoryShare::Bytes(1024));
    assert_eq!(parsed.share.streams, 1);
    let pc: PoolConfig = serde_json::from_str(r#"{"headroom":0.8}"#).unwrap();
    assert_eq!(pc.compute_slots, 4);
}

#[test]
fn device_oom_is_distinct_from_quota() {
    let (pool, host) = pool(64 * MIB);
    let a = pool.tenant("a", Share::fraction(0.5)).unwrap();
    host.fail_next_chunk_allocs(2);
    let err = a.alloc(MIB).unwrap_err();
    let oom = err.downcast_ref::<DeviceOutOfMemory>().expect("oom");
    assert_eq!(oom.requested(), 2 * MIB, "a small chunk");
    assert_eq!(a.stats().out_of_memory, 1);
    assert_eq!(a.stats().quota_rejections, 0);
    // One injected failure is absorbed by the retry after trimming.
    host.fail_next_chunk_allocs(1);
    let _b = a.alloc(MIB).unwrap();
}

#[test]
fn oom_gives_cached_chunks_back_and_retries() {
    // 48 MiB device, two tenants of 20 MiB each. a leaves 20 MiB of small
    // chunks cached; b's large chunks only fit once those are released.
    let (pool, host) = pool(48 * MIB);
    let a = pool.tenant("a", Share::bytes(20 * MIB)).unwrap();
    let b = pool.tenant("b", Share::bytes(20 * MIB)).unwrap();
    let small: Vec<_> = (0..20).map(|_| a.alloc(MIB).unwrap()).collect();
    drop(small);
    assert_eq!(host.used_bytes(), 20 * MIB);
    let x = b.alloc(12 * MIB).unwrap();
    let y = b.alloc(7 * MIB).unwrap();
    assert!(host.used_bytes() <= 48 * MIB);
    drop((x, y));
    assert!(pool.trim() > 0);
    assert_eq!(host.used_bytes(), 0);
    assert_eq!(pool.stats().reserved_bytes, 0);
}

#[test]
fn freed_range_waits_for_its_stream_before_other_streams_reuse_it() {
    let (pool, host) = pool(64 * MIB);
    let t = pool.tenant("t", Share::fraction(0.5).streams(2)).unwrap();
    let (s1, s2) = (t.streams()[0], t.streams()[1]);
    let first = t.alloc_on(s1, 2 * MIB).unwrap();
    let addr = first.device_ptr();
    // Work on s1 is still running when the buffer is dropped.
    host.hold(s1).unwrap();
    host.launch(s1, || {}).unwrap();
    drop(first);
    assert_eq!(pool.stats().pending_bytes, 2 * MIB);
    // s2 must not get the range; s1 may, at once.
    let other = t.alloc_on(s2, 2 * MIB).unwrap();
    assert_ne!(other.device_ptr(), addr);
    drop(other);
    let same = t.alloc_on(s1, 2 * MIB).unwrap();
    assert_eq!(same.device_ptr(), addr);
    drop(same);
    // Once s1's work completes, the range is everybody's.
    host.release(s1).unwrap();
    pool.poll_events();
    assert_eq!(pool.stats().pending_bytes, 0);
    let again = t.alloc_on(s2, 2 * MIB).unwrap();
    assert!(again.device_ptr() == addr || pool.stats().chunks == 1);
}

#[tokio::test(start_paused = true)]
async fn simulated_latency_delays_cross_stream_reuse() {
    let host = HostBackend::new(
        HostConfig::with_capacity(64 * MIB).op_latency(std::time::Duration::from_millis(5)),
    );
    let pool = GpuPool::from_arc(Arc::new(host.clone()), PoolConfig::default(), None).unwrap();
    let t = pool.tenant("t", Share::fraction(0.5).streams(2)).unwrap();
    let (s1, s2) = (t.streams()[0], t.streams()[1]);
    let buf = t.alloc_on(s1, MIB).unwrap();
    let addr = buf.device_ptr();
    host.launch(s1, || {}).unwrap(); // a "kernel" of 5 ms
    drop(buf);
    let other = t.alloc_on(s2, MIB).unwrap();
    assert_ne!(other.device_ptr(), addr);
    drop(other);
    tokio::time::advance(std::time::Duration::from_millis(6)).await;
    pool.poll_events();
    assert_eq!(pool.stats().pending_bytes, 0);
}

#[test]
fn streams_get_device_priorities() {
    let (pool, host) = pool(64 * MIB);
    let hi = pool
        .tenant("hi", Share::fraction(0.1).priority(Priority::High))
        .unwrap();
    let lo = pool
        .tenant("lo", Share::fraction(0.1).priority(Priority::Low))
        .unwrap();
    let range = host.priority_range();
    assert_eq!(host.stream_priority(hi.streams()[0]), Some(range.greatest));
    assert_eq!(host.stream_priority(lo.streams()[0]), Some(range.least));
    // A stream of another tenant is refused.
    assert!(hi.alloc_on(lo.streams()[0], 10).is_err());
}

#[test]
fn external_footprint_is_reserved_and_checked() {
    let (pool, _) = pool(100 * MIB);
    let torch = pool
        .tenant("torch", Share::external(60 * MIB, MIB))
        .unwrap();
    assert_eq!(pool.admitted_bytes(), 61 * MIB);
    // Admission counts the footprint: 0.5 more would over-commit.
    assert!(pool
        .tenant("x", Share::fraction(0.5))
        .unwrap_err()
        .is::<Overcommitted>());
    torch.check_external_usage(59 * MIB).unwrap();
    let e = torch.check_external_usage(61 * MIB).unwrap_err();
    assert_eq!((e.measured(), e.declared()), (61 * MIB, 60 * MIB));
    // Its pool quota is still enforced.
    assert!(torch.alloc(2 * MIB).unwrap_err().is::<QuotaExceeded>());
    // Device-wide: nothing allocated outside the pool on the host backend.
    assert_eq!(pool.check_external_usage().unwrap(), 0);
    let _ = FootprintExceeded::clone(&e);
}

#[test]
fn auto_reports_the_backend() {
    let pool = GpuPool::auto(PoolConfig::default().host_capacity(16 * MIB)).unwrap();
    // No GPU on the test machines: the host fallback says why.
    if pool.backend_kind() == BackendKind::Host {
        assert!(pool.fallback_reason().is_some());
        assert_eq!(pool.budget(), (16.0 * MIB as f64 * 0.9) as u64);
    }
}

#[test]
fn buffers_report_what_they_consume() {
    let (pool, _) = pool(64 * MIB);
    let t = pool.tenant("t", Share::fraction(0.5)).unwrap();
    let b = t.alloc(1000).unwrap();
    assert_eq!(
        (b.len(), b.consumed(), b.device_ptr() % 256),
        (1000, 1024, 0)
    );
    assert_eq!(t.used(), 1024);
    let z = t.alloc(0).unwrap();
    assert!(z.is_empty());
    assert_ne!(z.device_ptr(), b.device_ptr());
    assert_eq!(b.tenant(), "t");
    let s = pool.stats();
    assert_eq!(s.allocated_bytes, 1280);
    assert_eq!(s.requested_bytes, 1000);
    drop((b, z));
    assert_eq!(t.stats().peak_bytes, 1280);
    assert_eq!(t.used(), 0);
}

#[test]
fn concurrent_alloc_and_free_keep_exact_accounting() {
    let (pool, _) = pool(256 * MIB);
    let t = pool.tenant("t", Share::bytes(8 * MIB).streams(2)).unwrap();
    std::thread::scope(|sc| {
        for k in 0..2 {
            let t = t.clone();
            sc.spawn(move || {
                let s = t.streams()[k];
                let mut held = Vec::new();
                for i in 0..20_000u64 {
                    match t.alloc_on(s, (i * 7919 + k as u64 * 104_729) % (512 << 10)) {
                        Ok(b) => held.push(b),
                        Err(e) => assert!(e.is::<QuotaExceeded>(), "{e}"),
                    }
                    assert!(t.used() <= t.quota());
                    if !held.is_empty() && (held.len() > 8 || i % 3 == 0) {
                        let j = (i as usize * 31) % held.len();
                        drop(held.swap_remove(j));
                    }
                }
            });
        }
    });
    assert_eq!(t.used(), 0);
    assert_eq!(pool.stats().allocated_bytes, 0);
}
