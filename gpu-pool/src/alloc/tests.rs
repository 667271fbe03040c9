use proptest::prelude::*;

use super::*;

fn small_cfg() -> AllocatorConfig {
    AllocatorConfig {
        alignment: 256,
        small_max: 4096,
        small_chunk: 16384,
        large_chunk: 65536,
        large_round: 8192,
        min_large_split: 4096,
        never_split: 131072,
        oversize_waste: 16384,
    }
}

/// Allocates, registering chunks as needed (bases far apart).
fn alloc(a: &mut Allocator, size: u64, s: StreamId, next_base: &mut u64) -> Allocation {
    loop {
        match a.alloc(size, s, |_| true) {
            Ok(x) => return x,
            Err(Miss::NeedChunk { class, chunk_size }) => {
                a.add_chunk(*next_base, chunk_size, class);
                *next_base += chunk_size + (1 << 20);
            }
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
}

#[test]
fn best_fit_and_alignment() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let x = alloc(&mut a, 1, s, &mut base);
    assert_eq!(x.size, 256);
    assert_eq!(x.addr % 256, 0);
    let y = alloc(&mut a, 1000, s, &mut base);
    assert_eq!(y.size, 1024);
    assert_eq!(y.offset, 256);
    let z = alloc(&mut a, 512, s, &mut base);
    // Free a 1 KiB hole between x and z, then a 512 B request best-fits it
    // rather than the big tail.
    a.free(y.block, None).unwrap();
    let w = alloc(&mut a, 512, s, &mut base);
    assert_eq!(w.offset, 256);
    a.check_consistency().unwrap();
    for b in [x, z, w] {
        a.free(b.block, None).unwrap();
    }
    assert_eq!(a.stats().largest_free_block, 16384);
    assert_eq!(a.stats().fragmentation(), 0.0);
    a.check_consistency().unwrap();
}

#[test]
fn fragmentation_counts_crumbs_inside_chunks() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let x = alloc(&mut a, 4096, s, &mut base);
    let _y = alloc(&mut a, 4096, s, &mut base);
    let z = alloc(&mut a, 4096, s, &mut base);
    a.free(x.block, None).unwrap();
    a.free(z.block, None).unwrap();
    // Free: [0, 4 KiB) and [8 KiB, 16 KiB) in one chunk.
    let st = a.stats();
    assert_eq!((st.free_bytes, st.largest_free_block), (12288, 8192));
    assert!((st.fragmentation() - 1.0 / 3.0).abs() < 1e-9);
    // A second, empty chunk adds no fragmentation, only to the global figure.
    let big = alloc(&mut a, 10_000, s, &mut base);
    a.free(big.block, None).unwrap();
    let st = a.stats();
    assert!((st.fragmentation() - 4096.0 / (12288.0 + 65536.0)).abs() < 1e-9);
    assert!((st.global_fragmentation() - (1.0 - 65536.0 / 77824.0)).abs() < 1e-9);
}

#[test]
fn size_classes_use_separate_chunks() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let small = alloc(&mut a, 100, s, &mut base);
    let large = alloc(&mut a, 10_000, s, &mut base);
    assert_ne!(small.chunk, large.chunk);
    assert_eq!(a.stats().reserved_bytes, 16384 + 65536);
    // A large request below half a large chunk shares it...
    let large2 = alloc(&mut a, 20_000, s, &mut base);
    assert_eq!(large2.chunk, large.chunk);
    // ...a bigger one gets a chunk of its own, rounded to 8 KiB.
    let big = alloc(&mut a, 40_000, s, &mut base);
    assert_ne!(big.chunk, large.chunk);
    assert_eq!(a.stats().reserved_bytes, 16384 + 65536 + 40960);
    a.check_consistency().unwrap();
}

#[test]
fn large_tail_too_small_to_split_stays_with_block() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let x = alloc(&mut a, 40_000, s, &mut base); // own chunk of 40960
    assert_eq!(x.size, 40960, "a 960 B tail is below min_large_split");
    a.free(x.block, None).unwrap();
    let y = alloc(&mut a, 30_000, s, &mut base); // reuses, tail 10 KiB > 4 KiB: split
    assert_eq!(y.size, 30_208);
    a.check_consistency().unwrap();
}

#[test]
fn oversize_blocks_are_never_split() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let x = alloc(&mut a, 200_000, s, &mut base);
    assert_eq!(x.size, 204_800);
    a.free(x.block, None).unwrap();
    // Much smaller oversize request: the waste would exceed 16 KiB, so a new chunk.
    let y = alloc(&mut a, 140_000, s, &mut base);
    assert_ne!(y.chunk, x.chunk);
    // A close one reuses the whole block, unsplit.
    let z = alloc(&mut a, 195_000, s, &mut base);
    assert_eq!((z.chunk, z.size), (x.chunk, 204_800));
    a.check_consistency().unwrap();
}

#[test]
fn stream_ordered_reuse() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let (s1, s2) = (StreamId(1), StreamId(2));
    let mut base = 1 << 30;
    let x = alloc(&mut a, 4096, s1, &mut base);
    a.free(x.block, Some(7)).unwrap();
    // Same stream: reusable at once (best fit prefers it to the tail).
    let y = alloc(&mut a, 4096, s1, &mut base);
    assert_eq!(y.addr, x.addr);
    a.free(y.block, Some(8)).unwrap();
    // Other stream: not before s1 passes epoch 8.
    let z = alloc(&mut a, 4096, s2, &mut base);
    assert_ne!(z.addr, x.addr);
    a.free(z.block, None).unwrap();
    a.settle(s1, 7);
    assert_eq!(a.stats().pending_bytes, 4096, "epoch 8 not reached yet");
    assert_eq!(a.stats().largest_free_block, 12288);
    a.settle(s1, 8);
    assert_eq!(a.stats().pending_bytes, 0);
    assert_eq!(
        a.stats().largest_free_block,
        16384,
        "coalesced once settled"
    );
    let w = alloc(&mut a, 4096, s2, &mut base);
    assert_eq!(w.addr, x.addr);
    a.check_consistency().unwrap();
}

#[test]
fn quota_refusal_changes_nothing() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let _x = alloc(&mut a, 100, s, &mut base);
    let before = a.stats();
    assert_eq!(
        a.alloc(1000, s, |g| g <= 512),
        Err(Miss::Refused { granted: 1024 })
    );
    assert_eq!(a.stats(), before);
    a.check_consistency().unwrap();
}

#[test]
fn double_free_and_stale_ids_are_errors() {
    let mut a = Allocator::new(small_cfg()).unwrap();
    let s = StreamId(0);
    let mut base = 1 << 30;
    let x = alloc(&mut a, 100, s, &mut base);
    a.free(x.block, None).unwrap();
    assert_eq!(a.free(x.block, None), Err(InvalidBlock));
    let _y = alloc(&mut a, 100, s, &mut base); // reuses the node
    assert_eq!(a.free(x.block, None), Err(InvalidBlock));
    assert_eq!(a.alloc(u64::MAX, s, |_| true), Err(Miss::TooLarge));
    a.check_consistency().unwrap();
}

#[test]
fn bad_configs_are_rejected() {
    assert!(Allocator::new(AllocatorConfig::default().alignment(300)).is_err());
    assert!(Allocator::new(AllocatorConfig::default().alignment(0)).is_err());
    assert!(Allocator::new(AllocatorConfig::default().small_class(4096, 1024)).is_err());
    assert!(Allocator::new(AllocatorConfig::default().never_split(1)).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Alloc { stream: u32, size: u64 },
    Free { pick: usize, pending: bool },
    Settle { stream: u32 },
    Release,
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![
        4 => 0u64..5000,
        3 => 4000u64..70_000,
        1 => 120_000u64..260_000,
    ];
    prop_oneof![
        5 => (0u32..3, size).prop_map(|(stream, size)| Op::Alloc { stream, size }),
        4 => (any::<usize>(), any::<bool>()).prop_map(|(pick, pending)| Op::Free { pick, pending }),
        1 => (0u32..3).prop_map(|stream| Op::Settle { stream }),
        1 => Just(Op::Release),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    /// Random alloc/free/settle sequences over three streams (one tenant
    /// per stream, each with a quota): ranges never overlap and stay in
    /// their chunk, quotas hold, the stream rule holds, and after all is
    /// freed and settled every chunk is one free block again.
    #[test]
    fn allocator_invariants(ops in proptest::collection::vec(op(), 1..200)) {
        let mut a = Allocator::new(small_cfg()).unwrap();
        let limit = 300_000u64;
        let mut used = [0u64; 3];
        let mut base = 1u64 << 30;
        let mut chunks: Vec<(u64, u64)> = Vec::new();
        let mut live: Vec<(Allocation, u32)> = Vec::new();
        let mut epoch = 0u64;
        let mut done = [0u64; 3];
        // Ranges freed pending: (addr, size, stream, epoch).
        let mut pending: Vec<(u64, u64, u32, u64)> = Vec::new();
        for op in ops {
            match op {
                Op::Alloc { stream, size } => {
                    let u = used[stream as usize];
                    let got = loop {
                        match a.alloc(size, StreamId(stream), |g| u + g <= limit) {
                            Err(Miss::NeedChunk { class, chunk_size }) => {
                                a.add_chunk(base, chunk_size, class);
                                chunks.push((base, chunk_size));
                                base += chunk_size + 4096;
                            }
                            other => break other,
                        }
                    };
                    match got {
                        Ok(x) => {
                            used[stream as usize] += x.size;
                            prop_assert!(used[stream as usize] <= limit);
                            prop_assert!(x.size >= size);
                            prop_assert_eq!(x.addr % 256, 0);
                            prop_assert!(chunks.iter().any(|&(b, s)| x.addr >= b && x.addr + x.size <= b + s),
                                "range outside every chunk");
                            for (y, _) in &live {
                                prop_assert!(x.addr + x.size <= y.addr || y.addr + y.size <= x.addr,
                                    "overlap {:?} {:?}", x, y);
                            }
                            for &(addr, sz, s, e) in &pending {
                                if s != stream && e > done[s as usize] {
                                    prop_assert!(x.addr + x.size <= addr || addr + sz <= x.addr,
                                        "stream {} got a range stream {} freed at epoch {} (done {})",
                                        stream, s, e, done[s as usize]);
                                }
                            }
                            live.push((x, stream));
                        }
                        Err(Miss::Refused { granted }) => prop_assert!(u + granted > limit),
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Free { pick, pending: p } if !live.is_empty() => {
                    let (x, s) = live.swap_remove(pick % live.len());
                    used[s as usize] -= x.size;
                    if p {
                        epoch += 1;
                        pending.push((x.addr, x.size, s, epoch));
                        prop_assert_eq!(a.free(x.block, Some(epoch)), Ok(x.size));
                    } else {
                        // Immediate free asserts the stream's work is done.
                        done[s as usize] = epoch;
                        prop_assert_eq!(a.free(x.block, None), Ok(x.size));
                    }
                }
                Op::Free { .. } => {}
                Op::Settle { stream } => {
                    done[stream as usize] = epoch;
                    a.settle(StreamId(stream), epoch);
                }
                Op::Release => {
                    for c in a.release_empty_chunks() {
                        chunks.retain(|&(b, _)| b != c.base);
                    }
                }
            }
            pending.retain(|&(_, _, s, e)| e > done[s as usize]);
            a.check_consistency().map_err(TestCaseError::fail)?;
            let st = a.stats();
            prop_assert_eq!(st.allocated_bytes, live.iter().map(|l| l.0.size).sum::<u64>());
        }
        for (x, _) in live.drain(..) {
            epoch += 1;
            a.free(x.block, Some(epoch)).unwrap();
        }
        a.settle_all();
        a.check_consistency().map_err(TestCaseError::fail)?;
        for (_, size, free_blocks) in a.free_blocks_per_chunk() {
            prop_assert_eq!(free_blocks, 1, "chunk of {} not coalesced", size);
        }
        let st = a.stats();
        prop_assert_eq!(st.fragmentation(), 0.0);
        prop_assert_eq!(st.free_bytes, st.reserved_bytes);
        let released: u64 = a.release_empty_chunks().iter().map(|c| c.size).sum();
        prop_assert_eq!(released, st.reserved_bytes);
        prop_assert_eq!(a.stats().reserved_bytes, 0);
    }
}
