//! convoy-gpu-pool at the pool level: tenants come and go, allocate and free
//! on their streams (and buffers shared by all their streams), streams stall
//! and resume, the device refuses chunks now and then. After every step:
//! - live buffers never overlap, and a range freed while a stream that may
//!   use it still worked is not handed to another stream;
//! - each tenant's `used()` is the sum of its live buffers and within its
//!   quota; a refusal is `QuotaExceeded` exactly when the request does not
//!   fit, or `DeviceOutOfMemory` when the device refused;
//! - tenants leaving give their streams back.
//!
//! At the end every byte returns: nothing allocated or pending, every chunk
//! one free block, the device memory all released.

use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use convoy_gpu_pool::{
    DeviceOutOfMemory, GpuPool, HostBackend, HostConfig, PoolBuf, PoolConfig, QuotaExceeded, Share,
    StreamId, Tenant,
};

const MIB: u64 = 1 << 20;
const SLOTS: usize = 4;

#[derive(Debug, Arbitrary)]
enum Op {
    Join {
        slot: u8,
        quota_mib: u8,
        streams: u8,
    },
    Leave {
        slot: u8,
    },
    /// `stream` beyond the tenant's streams: a buffer for all of them.
    Alloc {
        slot: u8,
        stream: u8,
        size: u32,
        big: bool,
    },
    Drop {
        pick: u16,
    },
    Busy {
        slot: u8,
        stream: u8,
    },
    Finish {
        slot: u8,
        stream: u8,
    },
    RefuseChunks {
        n: u8,
    },
    Poll,
    Trim,
}

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };
    let host = HostBackend::new(HostConfig::with_capacity(256 * MIB));
    let pool = GpuPool::from_arc(Arc::new(host.clone()), PoolConfig::default(), None)
        .expect("a valid pool");
    let mut tenants: Vec<Option<Tenant>> = (0..SLOTS).map(|_| None).collect();
    let mut joined = 0u32;
    let mut live: Vec<PoolBuf> = Vec::new();
    let mut busy: Vec<StreamId> = Vec::new();
    let mut refusing = false;
    // (address, size, streams still working, the stream that may reuse it).
    let mut pending: Vec<(u64, u64, Vec<StreamId>, Option<StreamId>)> = Vec::new();
    let streams_before = host.live_streams();
    for op in ops.into_iter().take(300) {
        match op {
            Op::Join {
                slot,
                quota_mib,
                streams,
            } => {
                let slot = usize::from(slot) % SLOTS;
                if tenants[slot].is_none() {
                    joined += 1;
                    let share = Share::bytes(u64::from(quota_mib % 16 + 1) * MIB)
                        .streams(u32::from(streams % 3) + 1);
                    // Admission may refuse (over-commit); that is fine.
                    tenants[slot] = pool.tenant(format!("t{joined}"), share).ok();
                }
            }
            Op::Leave { slot } => {
                let slot = usize::from(slot) % SLOTS;
                if let Some(t) = tenants[slot].take() {
                    // Its buffers stay valid; its own streams may still be
                    // busy: let them finish so they can be given back.
                    for s in t.streams() {
                        if busy.contains(s) {
                            host.release(*s).expect("known stream");
                            busy.retain(|x| x != s);
                            for p in &mut pending {
                                p.2.retain(|x| x != s);
                            }
                        }
                    }
                    pending.retain(|p| !p.2.is_empty());
                }
            }
            Op::Alloc {
                slot,
                stream,
                size,
                big,
            } => {
                let Some(t) = &tenants[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let size = if big {
                    u64::from(size) % (6 * MIB)
                } else {
                    u64::from(size) % 300_000
                };
                let s = t.streams().get(usize::from(stream) % 4).copied();
                let used = t.used();
                let res = match s {
                    Some(s) => t.alloc_on(s, size),
                    None => t.alloc(size),
                };
                match res {
                    Ok(b) => {
                        let (lo, hi) = (b.device_ptr(), b.device_ptr() + b.consumed());
                        assert!(b.consumed() >= size, "short buffer");
                        for o in &live {
                            let (olo, ohi) = (o.device_ptr(), o.device_ptr() + o.consumed());
                            assert!(hi <= olo || ohi <= lo, "overlap {b:?} {o:?}");
                        }
                        // The streams that may use the new buffer; reusing a
                        // range still pending is safe only in the order of
                        // the one stream it was freed on.
                        let users = match s {
                            Some(s) => vec![s],
                            None => t.streams().to_vec(),
                        };
                        let ordered =
                            |own: &Option<StreamId>| users.len() == 1 && *own == Some(users[0]);
                        for (plo, psize, waits, own) in &pending {
                            if !ordered(own) {
                                assert!(
                                    hi <= *plo || plo + psize <= lo,
                                    "{s:?} reused a range freed while {waits:?} still worked"
                                );
                            }
                        }
                        live.push(b);
                    }
                    Err(e) => {
                        if let Some(q) = e.downcast_ref::<QuotaExceeded>() {
                            assert!(q.used() + q.requested() > q.limit(), "refused a fit: {e}");
                        } else {
                            assert!(
                                e.is::<DeviceOutOfMemory>() && refusing,
                                "unexpected error: {e}"
                            );
                        }
                        assert_eq!(t.used(), used, "a refusal changed usage");
                    }
                }
            }
            Op::Drop { pick } => {
                if live.is_empty() {
                    continue;
                }
                let b = live.swap_remove(usize::from(pick) % live.len());
                let users: Vec<StreamId> = if b.is_shared() {
                    tenants
                        .iter()
                        .flatten()
                        .find(|t| t.name() == b.tenant())
                        .map(|t| t.streams().to_vec())
                        .unwrap_or_default()
                } else {
                    vec![b.stream()]
                };
                let own = (users.len() == 1).then(|| users[0]);
                let waits: Vec<StreamId> = users.into_iter().filter(|s| busy.contains(s)).collect();
                if !waits.is_empty() {
                    pending.push((b.device_ptr(), b.consumed(), waits, own));
                }
                drop(b);
            }
            Op::Busy { slot, stream } => {
                let Some(t) = &tenants[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let s = t.streams()[usize::from(stream) % t.streams().len()];
                if !busy.contains(&s) {
                    host.hold(s).expect("known stream");
                    host.launch(s, || {}).expect("known stream");
                    busy.push(s);
                }
            }
            Op::Finish { slot, stream } => {
                let Some(t) = &tenants[usize::from(slot) % SLOTS] else {
                    continue;
                };
                let s = t.streams()[usize::from(stream) % t.streams().len()];
                if busy.contains(&s) {
                    host.release(s).expect("known stream");
                    busy.retain(|&x| x != s);
                    for p in &mut pending {
                        p.2.retain(|&x| x != s);
                    }
                    pending.retain(|p| !p.2.is_empty());
                }
            }
            Op::RefuseChunks { n } => {
                host.fail_next_chunk_allocs(u32::from(n % 3));
                refusing = true;
            }
            Op::Poll => pool.poll_events(),
            Op::Trim => {
                pool.trim();
            }
        }
        for t in tenants.iter().flatten() {
            let sum: u64 = live
                .iter()
                .filter(|b| b.tenant() == t.name())
                .map(|b| b.consumed())
                .sum();
            assert_eq!(t.used(), sum, "tenant {} usage", t.name());
            assert!(t.used() <= t.quota(), "tenant {} over quota", t.name());
        }
    }
    host.fail_next_chunk_allocs(0);
    live.clear();
    for s in busy {
        host.release(s).expect("known stream");
    }
    tenants.clear();
    pool.poll_events();
    let st = pool.stats();
    assert_eq!(st.allocated_bytes, 0, "bytes still allocated");
    assert_eq!(st.pending_bytes, 0, "bytes still pending");
    assert_eq!(st.fragmentation(), 0.0);
    assert_eq!(pool.trim(), st.reserved_bytes, "a chunk did not coalesce");
    assert_eq!(host.used_bytes(), 0, "device memory not released");
    assert_eq!(
        host.live_streams(),
        streams_before,
        "streams not given back"
    );
}
