//! convoy-gpu-pool benchmarks, with the system allocator side by side.
//!
//! Run with `cargo bench -p convoy-benches --bench gpu_pool` (about 3 min).
//! GPU comparisons (pool vs cuMemAlloc/cuMemFree and vs cuMemAllocAsync on
//! the default pool) need `--features cuda` and a GPU; without one they print
//! "skipped: no GPU".
//!
//! - `small_alloc_free`: one 512 B alloc + free, pool (host backend) vs
//!   `std::alloc` of the same size and alignment.
//! - `mixed_pairs/{1,2}_threads`: alloc + free pairs over sizes log-uniform
//!   in 256 B..64 MiB with 16 buffers live per thread, pool vs `std::alloc`.
//! - Fragmentation after a long random workload is printed before the
//!   criterion runs.

// criterion_group! generates an undocumented public function.
#![allow(missing_docs)]

use std::collections::VecDeque;
use std::hint::black_box;
use std::time::Duration;

use tokio::time::Instant;

use convoy_gpu_pool::{
    Allocator, AllocatorConfig, GpuPool, HostBackend, HostConfig, PoolBuf, PoolConfig, Share,
    SizeClass, StreamId, Tenant,
};
use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const GIB: u64 = 1 << 30;
const LIVE: usize = 16;
const OPS: usize = 4096;

fn host_pool(tenants: usize) -> (GpuPool, Vec<Tenant>) {
    let pool = GpuPool::new(
        HostBackend::new(HostConfig::with_capacity(8 * GIB)),
        PoolConfig::default(),
    )
    .expect("pool");
    let ts = (0..tenants)
        .map(|i| {
            pool.tenant(format!("t{i}"), Share::bytes(2 * GIB))
                .expect("tenant")
        })
        .collect();
    (pool, ts)
}

/// Sizes log-uniform between 256 B and 64 MiB.
fn mixed_sizes(seed: u64, n: usize) -> Vec<u64> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n)
        .map(|_| {
            let exp: f64 = rng.random_range(8.0..26.0);
            2f64.powf(exp) as u64
        })
        .collect()
}

/// `sizes.len()` alloc+free pairs through the pool, `LIVE` buffers in flight.
fn pool_pairs(t: &Tenant, sizes: &[u64]) {
    let mut live: VecDeque<PoolBuf> = VecDeque::with_capacity(LIVE + 1);
    for &s in sizes {
        live.push_back(t.alloc(s).expect("alloc"));
        if live.len() > LIVE {
            drop(live.pop_front());
        }
    }
}

/// The system allocator baseline. `std::alloc::alloc` is an `unsafe fn`
/// and the workspace denies `unsafe` outside gpu-pool's CUDA module, so the
/// baseline goes through `Vec::with_capacity` of 256-byte aligned units:
/// the same global allocator call (`alloc` with size rounded to 256 B and
/// 256 B alignment) and `dealloc` on drop, no bytes touched.
#[derive(Clone, Copy)]
#[repr(C, align(256))]
struct Unit(#[allow(dead_code)] [u8; 256]);

fn bench_small(c: &mut Criterion) {
    let (_pool, ts) = host_pool(1);
    let t = &ts[0];
    drop(t.alloc(512).expect("warm the chunk"));
    let mut g = c.benchmark_group("gpu_pool/small_alloc_free");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("pool_host", |b| {
        b.iter(|| drop(black_box(t.alloc(black_box(512)).expect("alloc"))))
    });
    let mut a = Allocator::new(AllocatorConfig::default()).expect("allocator");
    a.add_chunk(1 << 40, 2 << 20, SizeClass::Small);
    g.bench_function("allocator_only", |b| {
        b.iter(|| {
            let x = a
                .alloc(black_box(512), StreamId(0), |_| true)
                .expect("fits");
            a.free(x.block, None).expect("live")
        })
    });
    g.bench_function("system_alloc", |b| {
        b.iter(|| drop(black_box(SysBuf::new(black_box(512)))))
    });
    g.finish();
}

/// A system allocation of `n` bytes, 256 B aligned, freed on drop.
struct SysBuf(#[allow(dead_code)] Vec<Unit>);

impl SysBuf {
    fn new(n: usize) -> Self {
        Self(Vec::with_capacity(n.div_ceil(256)))
    }
}

/// `sizes.len()` alloc+free pairs through the system allocator.
fn system_pairs(sizes: &[u64]) {
    let mut live: VecDeque<SysBuf> = VecDeque::with_capacity(LIVE + 1);
    for &s in sizes {
        live.push_back(black_box(SysBuf::new(s as usize)));
        if live.len() > LIVE {
            drop(live.pop_front());
        }
    }
}

fn bench_mixed(c: &mut Criterion) {
    let mut g = c.benchmark_group("gpu_pool/mixed_pairs");
    g.measurement_time(Duration::from_secs(6));
    g.sample_size(20);
    g.throughput(Throughput::Elements(OPS as u64));
    for threads in [1usize, 2] {
        let (_pool, ts) = host_pool(threads);
        let sizes: Vec<Vec<u64>> = (0..threads)
            .map(|i| mixed_sizes(42 + i as u64, OPS))
            .collect();
        // Warm the cache (chunks are reserved once, then reused).
        for (t, s) in ts.iter().zip(&sizes) {
            pool_pairs(t, s);
        }
        g.bench_with_input(BenchmarkId::new("pool_host", threads), &threads, |b, _| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    std::thread::scope(|sc| {
                        for (t, s) in ts.iter().zip(&sizes) {
                            sc.spawn(move || pool_pairs(t, s));
                        }
                    });
                }
                start.elapsed()
            })
        });
        g.bench_with_input(
            BenchmarkId::new("system_alloc", threads),
            &threads,
            |b, _| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        std::thread::scope(|sc| {
                            for s in &sizes {
                                sc.spawn(move || system_pairs(s));
                            }
                        });
                    }
                    start.elapsed()
                })
            },
        );
    }
    g.finish();
}

/// A long random workload: random sizes, random lifetimes, 3 tenants.
fn fragmentation_report() {
    let (pool, ts) = host_pool(3);
    let mut rng = StdRng::seed_from_u64(7);
    let mut live: Vec<PoolBuf> = Vec::new();
    let ops = 200_000;
    let mut worst: f64 = 0.0;
    let mut sum = 0.0;
    let mut samples = 0;
    for i in 0..ops {
        if live.len() < 64 && (live.is_empty() || rng.random_bool(0.55)) {
            let exp: f64 = rng.random_range(8.0..26.0);
            let t = &ts[rng.random_range(0..ts.len())];
            if let Ok(b) = t.alloc(2f64.powf(exp) as u64) {
                live.push(b);
            }
        } else {
            let k = rng.random_range(0..live.len());
            drop(live.swap_remove(k));
        }
        if i > ops / 10 && i % 1000 == 0 {
            let f = pool.stats().fragmentation();
            worst = worst.max(f);
            sum += f;
            samples += 1;
        }
    }
    let s = pool.stats();
    println!(
        "gpu_pool fragmentation after {ops} random ops ({} live, {:.1} MiB allocated, {:.1} MiB reserved, {} chunks): \
         now {:.1}%, mean {:.1}%, worst {:.1}% (per chunk: 1 - sum of largest free block per chunk / total free); \
         whole pool 1 - largest_free/total_free now {:.1}%",
        s.live_blocks,
        s.allocated_bytes as f64 / (1 << 20) as f64,
        s.reserved_bytes as f64 / (1 << 20) as f64,
        s.chunks,
        100.0 * s.fragmentation(),
        100.0 * sum / samples as f64,
        100.0 * worst,
        100.0 * s.global_fragmentation(),
    );
    live.clear();
    let s = pool.stats();
    println!(
        "gpu_pool after freeing everything: fragmentation {:.1}%, reserved {:.1} MiB kept cached, trim releases {:.1} MiB",
        100.0 * s.fragmentation(),
        s.reserved_bytes as f64 / (1 << 20) as f64,
        pool.trim() as f64 / (1 << 20) as f64,
    );
}

#[cfg(feature = "cuda")]
fn bench_cuda(c: &mut Criterion) {
    use convoy_gpu_pool::{CudaBackend, NoGpu, RawAlloc};
    let dev = match CudaBackend::new(0) {
        Ok(d) => d,
        Err(e) if e.is::<NoGpu>() => {
            println!("gpu_pool/cuda: skipped: no GPU ({e})");
            return;
        }
        Err(e) => panic!("CUDA present but unusable: {e}"),
    };
    let raw = CudaBackend::new(0).expect("second handle");
    let pool = GpuPool::new(dev, PoolConfig::default()).expect("pool");
    let t = pool.tenant("bench", Share::fraction(0.5)).expect("tenant");
    println!("gpu_pool/cuda: on {}", pool.device_name());
    for (label, bytes) in [
        ("4KiB", 4usize << 10),
        ("1MiB", 1 << 20),
        ("64MiB", 64 << 20),
    ] {
        let mut g = c.benchmark_group(format!("gpu_pool/cuda_alloc_free_{label}"));
        g.bench_function("pool", |b| {
            b.iter(|| drop(t.alloc(bytes as u64).expect("alloc")))
        });
        g.bench_function("cuMemAlloc", |b| {
            b.iter(|| raw.raw_alloc_free(bytes, RawAlloc::Sync).expect("raw"))
        });
        g.bench_function("cuMemAllocAsync+sync", |b| {
            b.iter(|| raw.raw_alloc_free(bytes, RawAlloc::Async).expect("raw"))
        });
        g.bench_function("cuMemAllocAsync_queued", |b| {
            b.iter(|| {
                raw.raw_alloc_free(bytes, RawAlloc::AsyncQueued)
                    .expect("raw")
            })
        });
        g.finish();
    }
}

#[cfg(not(feature = "cuda"))]
fn bench_cuda(_: &mut Criterion) {
    println!("gpu_pool/cuda: skipped: built without `--features cuda`");
}

criterion_group!(benches, bench_small, bench_mixed, bench_cuda);

fn main() {
    fragmentation_report();
    benches();
    Criterion::default().configure_from_args().final_summary();
}
