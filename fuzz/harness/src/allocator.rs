//! Random alloc / free / settle / release sequences into the offset
//! allocator: every step must keep its structural invariants
//! (`check_consistency`), live ranges never overlap and stay inside their
//! chunk, a range freed on one stream is never handed to another before
//! that stream passes the free's epoch, and after everything is freed and
//! settled each chunk is one free block again.

use arbitrary::{Arbitrary, Unstructured};
use convoy_gpu_pool::{Allocation, Allocator, AllocatorConfig, Miss, StreamId};

#[derive(Debug, Arbitrary)]
enum Op {
    Alloc { stream: u8, size: u32 },
    Free { pick: u16, pending: bool },
    Settle { stream: u8 },
    Release,
}

const STREAMS: u8 = 3;

/// Runs one input. Panics when an invariant breaks.
pub fn run(data: &[u8]) {
    let Ok(ops) = Vec::<Op>::arbitrary_take_rest(Unstructured::new(data)) else {
        return;
    };

    let cfg = AllocatorConfig {
        alignment: 256,
        small_max: 4096,
        small_chunk: 16384,
        large_chunk: 65536,
        large_round: 8192,
        min_large_split: 4096,
        never_split: 131072,
        oversize_waste: 16384,
    };
    let mut a = Allocator::new(cfg).expect("valid config");
    let mut base = 1u64 << 30;
    let mut chunks: Vec<(u64, u64)> = Vec::new();
    let mut live: Vec<(Allocation, u8)> = Vec::new();
    let mut epoch = 0u64;
    let mut done = [0u64; STREAMS as usize];
    let mut pending: Vec<(u64, u64, u8, u64)> = Vec::new();
    for op in ops.into_iter().take(512) {
        match op {
            Op::Alloc { stream, size } => {
                let stream = stream % STREAMS;
                let size = u64::from(size % 300_000);
                let got = loop {
                    match a.alloc(size, StreamId(stream.into()), |_| true) {
                        Err(Miss::NeedChunk { class, chunk_size }) => {
                            a.add_chunk(base, chunk_size, class);
                            chunks.push((base, chunk_size));
                            base += chunk_size + 4096;
                        }
                        other => break other,
                    }
                };
                let x = got.expect("unbounded accept never refuses");
                assert!(x.size >= size && x.addr % 256 == 0);
                assert!(chunks
                    .iter()
                    .any(|&(b, s)| x.addr >= b && x.addr + x.size <= b + s));
                for (y, _) in &live {
                    assert!(x.addr + x.size <= y.addr || y.addr + y.size <= x.addr);
                }
                for &(addr, sz, s, e) in &pending {
                    if s != stream && e > done[s as usize] {
                        assert!(x.addr + x.size <= addr || addr + sz <= x.addr);
                    }
                }
                live.push((x, stream));
            }
            Op::Free { pick, pending: p } => {
                if live.is_empty() {
                    continue;
                }
                let (x, s) = live.swap_remove(pick as usize % live.len());
                if p {
                    epoch += 1;
                    pending.push((x.addr, x.size, s, epoch));
                    assert_eq!(a.free(x.block, Some(epoch)), Ok(x.size));
                } else {
                    done[s as usize] = epoch;
                    assert_eq!(a.free(x.block, None), Ok(x.size));
                }
                assert!(a.free(x.block, None).is_err(), "double free accepted");
            }
            Op::Settle { stream } => {
                let stream = stream % STREAMS;
                done[stream as usize] = epoch;
                a.settle(StreamId(stream.into()), epoch);
            }
            Op::Release => {
                for c in a.release_empty_chunks() {
                    chunks.retain(|&(b, _)| b != c.base);
                }
            }
        }
        pending.retain(|&(_, _, s, e)| e > done[s as usize]);
        a.check_consistency().expect("invariants");
    }
    for (x, _) in live.drain(..) {
        a.free(x.block, None).expect("live block");
    }
    a.settle_all();
    a.check_consistency().expect("invariants");
    assert!(a.free_blocks_per_chunk().iter().all(|c| c.2 == 1));
    assert_eq!(a.stats().fragmentation(), 0.0);
}
