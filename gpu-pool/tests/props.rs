//! Property test of the whole pool: random alloc/free sequences by several
//! tenants on several streams, with streams stalling and resuming.

use std::sync::Arc;

use convoy_gpu_pool::{
    GpuPool, HostBackend, HostConfig, PoolBuf, PoolConfig, QuotaExceeded, Share, StreamId, Tenant,
};
use proptest::prelude::*;

const MIB: u64 = 1 << 20;

#[derive(Debug, Clone)]
enum Op {
    /// `stream` 2 is a buffer for every stream of the tenant (`Tenant::alloc`).
    Alloc {
        tenant: usize,
        stream: usize,
        size: u64,
    },
    Drop {
        pick: usize,
    },
    /// Stall a stream and queue work on it.
    Busy {
        tenant: usize,
        stream: usize,
    },
    /// Let a stream finish its work.
    Finish {
        tenant: usize,
        stream: usize,
    },
    Poll,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        6 => 0u64..300_000,
        3 => 300_000u64..3 * MIB,
        1 => 3 * MIB..6 * MIB,
    ];
    prop_oneof![
        6 => (0usize..3, 0usize..3, size).prop_map(|(tenant, stream, size)| Op::Alloc { tenant, stream, size }),
        4 => any::<usize>().prop_map(|pick| Op::Drop { pick }),
        1 => (0usize..3, 0usize..2).prop_map(|(tenant, stream)| Op::Busy { tenant, stream }),
        1 => (0usize..3, 0usize..2).prop_map(|(tenant, stream)| Op::Finish { tenant, stream }),
        1 => Just(Op::Poll),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn pool_invariants(ops in proptest::collection::vec(op(), 1..120)) {
        let host = HostBackend::new(HostConfig::with_capacity(256 * MIB));
        let pool = GpuPool::from_arc(Arc::new(host.clone()), PoolConfig::default(), None).unwrap();
        let tenants: Vec<Tenant> = (0..3)
            .map(|i| pool.tenant(format!("t{i}"), Share::bytes(8 * MIB).streams(2)).unwrap())
            .collect();
        let mut live: Vec<PoolBuf> = Vec::new();
        let mut busy: Vec<StreamId> = Vec::new();
        // Ranges dropped while a stream that may use them had unfinished
        // work: (address, size, the streams still working, the stream that
        // may reuse it at once: a buffer's own stream, none for a buffer of
        // every stream of its tenant).
        let mut pending: Vec<(u64, u64, Vec<StreamId>, Option<StreamId>)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { tenant, stream, size } => {
                    let t = &tenants[tenant];
                    // None: usable on every stream of the tenant.
                    let s = t.streams().get(stream).copied();
                    let used = t.used();
                    let res = match s {
                        Some(s) => t.alloc_on(s, size),
                        None => t.alloc(size),
                    };
                    match res {
                        Ok(b) => {
                            let (lo, hi) = (b.device_ptr(), b.device_ptr() + b.consumed());
                            prop_assert!(b.consumed() >= size);
                            for o in &live {
                                let (olo, ohi) = (o.device_ptr(), o.device_ptr() + o.consumed());
                                prop_assert!(hi <= olo || ohi <= lo, "overlap {:?} {:?}", b, o);
                            }
                            for (plo, psize, waits, own) in &pending {
                                if s.is_none() || *own != s {
                                    prop_assert!(hi <= *plo || plo + psize <= lo,
                                        "{:?} reused a range freed while {:?} still worked", s, waits);
                                }
                            }
                            live.push(b);
                        }
                        Err(e) => {
                            let q = e.downcast_ref::<QuotaExceeded>();
                            prop_assert!(q.is_some(), "unexpected error {}", e);
                            let q = q.unwrap();
                            prop_assert!(q.used() + q.requested() > q.limit());
                            prop_assert_eq!(t.used(), used);
                        }
                    }
                }
                Op::Drop { pick } if !live.is_empty() => {
                    let b = live.swap_remove(pick % live.len());
                    let (users, own) = if b.is_shared() {
                        let t = tenants.iter().find(|t| t.name() == b.tenant()).unwrap();
                        (t.streams().to_vec(), None)
                    } else {
                        (vec![b.stream()], Some(b.stream()))
                    };
                    let waits: Vec<StreamId> = users.into_iter().filter(|s| busy.contains(s)).collect();
                    if !waits.is_empty() {
                        pending.push((b.device_ptr(), b.consumed(), waits, own));
                    }
                    drop(b);
                }
                Op::Drop { .. } => {}
                Op::Busy { tenant, stream } => {
                    let s = tenants[tenant].streams()[stream];
                    host.hold(s).unwrap();
                    host.launch(s, || {}).unwrap();
                    busy.push(s);
                }
                Op::Finish { tenant, stream } => {
                    let s = tenants[tenant].streams()[stream];
                    host.release(s).unwrap();
                    busy.retain(|&x| x != s);
                    for p in &mut pending {
                        p.2.retain(|&x| x != s);
                    }
                    pending.retain(|p| !p.2.is_empty());
                }
                Op::Poll => pool.poll_events(),
            }
            for t in &tenants {
                let sum: u64 = live.iter().filter(|b| b.tenant() == t.name()).map(|b| b.consumed()).sum();
                prop_assert_eq!(t.used(), sum);
                prop_assert!(t.used() <= t.quota());
            }
        }
        live.clear();
        for s in busy {
            host.release(s).unwrap();
        }
        pool.poll_events();
        let st = pool.stats();
        prop_assert_eq!(st.allocated_bytes, 0);
        prop_assert_eq!(st.pending_bytes, 0);
        prop_assert_eq!(st.fragmentation(), 0.0);
        // Every chunk coalesced back into one free block: all can be released.
        prop_assert_eq!(pool.trim(), st.reserved_bytes);
        prop_assert_eq!(host.used_bytes(), 0);
    }
}
