//! Charges: bytes a framework allocates on its own memory (libtorch's
//! allocator hooks), counted against a tenant's quota with the pool's own
//! buffers.

use std::sync::Arc;

use convoy_gpu_pool::{GpuPool, HostBackend, HostConfig, PoolConfig, QuotaExceeded, Share};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

fn pool() -> GpuPool {
    let host = HostBackend::new(HostConfig::with_capacity(64 * MIB));
    GpuPool::from_arc(Arc::new(host), PoolConfig::default().headroom(1.0), None).unwrap()
}

#[test]
fn charges_count_against_the_quota_and_come_back() {
    let pool = pool();
    let t = pool.tenant("torch", Share::bytes(10 * MIB)).unwrap();
    let other = pool.tenant("other", Share::bytes(10 * MIB)).unwrap();
    t.charge(6 * MIB).unwrap();
    assert_eq!(t.used(), 6 * MIB);
    // A pool buffer and a charge share the quota.
    let buf = t.alloc(3 * MIB).unwrap();
    let err: QuotaExceeded = t.charge(2 * MIB).unwrap_err();
    assert_eq!(err.tenant(), "torch");
    assert_eq!(err.requested(), 2 * MIB);
    assert_eq!(err.used(), 9 * MIB);
    assert_eq!(err.limit(), 10 * MIB);
    assert!(err.to_string().contains("quota exceeded"), "{err}");
    // Nothing was counted by the refusal, and the other tenant is intact.
    assert_eq!(t.used(), 9 * MIB);
    other.charge(10 * MIB).unwrap();
    t.uncharge(6 * MIB);
    drop(buf);
    let s = t.stats();
    assert_eq!((s.used_bytes, s.peak_bytes), (0, 9 * MIB));
    assert_eq!(s.quota_rejections, 1);
    assert_eq!(s.allocations, 2);
    // Giving back more than is in use leaves zero, never a panic.
    t.uncharge(MIB);
    assert_eq!(t.used(), 0);
}

proptest! {
    /// Any sequence of charges and uncharges: `used` is the sum of the
    /// charges that were accepted and not given back, never past the quota,
    /// and a charge is refused exactly when it would not fit.
    #[test]
    fn used_is_the_sum_of_live_charges(ops in prop::collection::vec((any::<bool>(), 1u64..4 * MIB), 1..64)) {
        let pool = pool();
        let t = pool.tenant("t", Share::bytes(10 * MIB)).unwrap();
        let mut live: Vec<u64> = Vec::new();
        for (charge, bytes) in ops {
            if charge || live.is_empty() {
                let fits = live.iter().sum::<u64>() + bytes <= 10 * MIB;
                prop_assert_eq!(t.charge(bytes).is_ok(), fits);
                if fits {
                    live.push(bytes);
                }
            } else {
                t.uncharge(live.swap_remove(bytes as usize % live.len()));
            }
            prop_assert_eq!(t.used(), live.iter().sum::<u64>());
            prop_assert!(t.used() <= t.quota());
        }
    }
}
