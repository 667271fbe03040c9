//! The allocator hooks against a real model: every byte libtorch allocates
//! for a model is charged to its convoy-gpu-pool tenant (on the CPU, the
//! host backend's accounting).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use convoy_gpu_pool::{GpuPool, HostBackend, HostConfig, PoolConfig, Share, Tenant};
use std::time::Duration;

use convoy_batcher::{BatchConfig, BatchLayer};
use convoy_gpu_pool::QuotaExceeded;
use example_models::{hooks, synthetic_input, Device, LoadOptions, Model, ModelErrorKind};
use example_tensor::NamedTensor;
use parking_lot::Mutex;
use proptest::prelude::*;
use tower::{BoxError, Layer, ServiceExt};

const MIB: u64 = 1 << 20;

/// The hooks' counters are process-wide: the tests of this file run one
/// at a time so each sees only its own models' allocations.
static SERIAL: Mutex<()> = Mutex::new(());

fn model_dir(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .join(name)
        .join("1");
    assert!(
        dir.join("model.json").exists(),
        "{} is missing: run scripts/setup.sh (it exports the models)",
        dir.display()
    );
    dir
}

fn pool() -> GpuPool {
    let host = HostBackend::new(HostConfig::with_capacity(16 << 30));
    GpuPool::from_arc(Arc::new(host), PoolConfig::default().headroom(1.0), None).unwrap()
}

fn opts(threads: usize) -> LoadOptions {
    LoadOptions {
        device: Device::Cpu,
        intra_op_threads: threads,
        max_batch_size: 1,
        ..LoadOptions::default()
    }
}

fn minilm(tenant: &Tenant, threads: usize) -> Model {
    Model::load_for_tenant(&model_dir("minilm"), &opts(threads), tenant.clone()).unwrap()
}

/// A batch of `rows` single-row items of `len` tokens.
fn batch(model: &Model, rows: usize, len: usize) -> Vec<Vec<NamedTensor>> {
    (0..rows)
        .map(|_| synthetic_input(model.manifest(), 1, len))
        .collect()
}

#[test]
fn a_forward_pass_is_charged_to_its_tenant_and_its_bytes_come_back() {
    let _serial = SERIAL.lock();
    let pool = pool();
    let tenant = pool.tenant("minilm", Share::bytes(4 << 30)).unwrap();
    let model = minilm(&tenant, 2);
    // The weights (and what loading keeps) rest on the tenant.
    let resting = tenant.used();
    assert!(resting > 40 * MIB, "MiniLM's weights: {resting} bytes");
    for rows in [1, 8, 32] {
        let before = hooks::stats();
        let charged = tenant.stats();
        model.forward_blocking(batch(&model, rows, 64)).unwrap();
        let after = hooks::stats();
        let allocated = after.allocated_bytes - before.allocated_bytes;
        let unattributed = after.unattributed_bytes - before.unattributed_bytes;
        let stats = tenant.stats();
        // Back to the weights once the pass is over.
        assert_eq!(stats.used_bytes, resting, "batch {rows}");
        // It rose during the pass by what libtorch allocated.
        assert!(stats.allocations > charged.allocations, "batch {rows}");
        let coverage = 1.0 - unattributed as f64 / allocated as f64;
        eprintln!(
            "batch {rows}: libtorch allocated {allocated} bytes, unattributed {unattributed}, coverage {:.4}, peak {} over resting {}",
            coverage, stats.peak_bytes - resting, resting
        );
        assert!(coverage >= 0.99, "coverage {coverage}");
    }
}

/// The share of the bytes libtorch allocates during a forward pass that is
/// charged to the pass's tenant, for each exported model, with two intra-op
/// threads (the OpenMP workers' allocations count).
#[test]
fn coverage_of_each_model_is_at_least_99_percent() {
    let _serial = SERIAL.lock();
    let pool = pool();
    for (name, rows) in [("minilm", 32), ("resnet50", 4), ("yolov8n", 2)] {
        let tenant = pool.tenant(name, Share::bytes(4 << 30)).unwrap();
        let model = Model::load_for_tenant(&model_dir(name), &opts(2), tenant.clone()).unwrap();
        let resting = tenant.used();
        let before = hooks::stats();
        let charged = model_charged(&model, &tenant, rows);
        let after = hooks::stats();
        let allocated = after.allocated_bytes - before.allocated_bytes;
        let unattributed = after.unattributed_bytes - before.unattributed_bytes;
        let coverage = charged as f64 / allocated as f64;
        eprintln!(
            "coverage {name} batch {rows}: {charged} of {allocated} bytes charged ({:.4}), {unattributed} unattributed",
            coverage
        );
        assert!(coverage >= 0.99, "{name}: coverage {coverage}");
        assert_eq!(tenant.used(), resting, "{name}");
    }
}

/// Runs one batch and returns the bytes charged to the tenant meanwhile.
fn model_charged(model: &Model, tenant: &Tenant, rows: usize) -> u64 {
    let before = hooks::charged_bytes(tenant.name());
    model.forward_blocking(batch(model, rows, 64)).unwrap();
    hooks::charged_bytes(tenant.name()) - before
}

/// libtorch's intra-op workers allocate for the tenant whose scope opened
/// their parallel region, and follow the thread to its next tenant.
#[test]
fn intra_op_workers_are_charged_to_the_tenant_of_the_scope() {
    let _serial = SERIAL.lock();
    let pool = pool();
    let a = pool.tenant("workers-a", Share::bytes(64 * MIB)).unwrap();
    let b = pool.tenant("workers-b", Share::bytes(64 * MIB)).unwrap();
    std::thread::spawn(move || {
        tch::set_num_threads(2);
        let (ra, rb) = (
            hooks::register(a.clone()).unwrap(),
            hooks::register(b.clone()).unwrap(),
        );
        let before = hooks::stats();
        for (reg, other) in [(&ra, &rb), (&rb, &ra), (&ra, &rb)] {
            let (mine, theirs) = (reg.charged_bytes(), other.charged_bytes());
            let scope = reg.enter();
            let workers = hooks::probe_workers(MIB) as u64;
            drop(scope);
            assert!(workers >= 1, "no worker ran");
            assert_eq!(reg.charged_bytes() - mine, workers * MIB);
            assert_eq!(other.charged_bytes(), theirs);
            assert_eq!(reg.tenant().used(), 0, "freed on the worker, credited");
        }
        let after = hooks::stats();
        assert_eq!(after.unattributed_bytes, before.unattributed_bytes);
    })
    .join()
    .unwrap();
}

/// A tenant's tensors of 128 KiB or more are blocks of their size class:
/// a freed one is kept for the tenant's next allocation of that class (no
/// new mapping), and its blocks in use and cached never pass its quota (a
/// new block first unmaps cached ones); dropping the registration unmaps
/// the cache.
#[test]
fn freed_blocks_are_reused_by_their_tenant_within_its_quota() {
    let _serial = SERIAL.lock();
    let pool = pool();
    let quota = 16 * MIB;
    let tenant = pool.tenant("blocks", Share::bytes(quota)).unwrap();
    std::thread::spawn(move || {
        let reg = hooks::register(tenant).unwrap();
        let scope = reg.enter();
        // `bytes` of f32 zeros (their block: the data and a 64-byte header,
        // rounded up to a quarter of its power of two).
        let zeros = |bytes: u64| {
            tch::Tensor::zeros([(bytes / 4) as i64], (tch::Kind::Float, tch::Device::Cpu))
        };
        let block = |in_use: u64, cached: u64| hooks::BlockBytes { in_use, cached };
        let t = zeros(MIB);
        assert_eq!(reg.block_bytes(), block(5 * MIB / 4, 0));
        drop(t);
        assert_eq!(reg.block_bytes(), block(0, 5 * MIB / 4));
        // The same class: the cached block.
        let t = zeros(MIB + 4096);
        assert_eq!(reg.block_bytes(), block(5 * MIB / 4, 0));
        drop(t);
        // Eight of them cached (10 MiB), then blocks of other classes: the
        // cache gives way, in use and cached within the quota throughout.
        let eight: Vec<_> = (0..8).map(|_| zeros(MIB)).collect();
        drop(eight);
        assert_eq!(reg.block_bytes(), block(0, 10 * MIB));
        let mut live = Vec::new();
        for k in 1..6 {
            live.push(zeros(MIB + k * 256 * 1024));
            let b = reg.block_bytes();
            assert!(b.in_use + b.cached <= quota, "{k}: {b:?}");
        }
        // 10.25 MiB of blocks in use: 10 MiB cached did not fit beside them.
        let b = reg.block_bytes();
        assert_eq!(b.in_use, (6 + 7 + 8 + 10 + 10) * MIB / 4);
        assert!(b.cached < 10 * MIB, "{b:?}");
        // Small tensors are not blocks.
        let before = reg.block_bytes();
        let small = zeros(64 * 1024);
        assert_eq!(reg.block_bytes(), before);
        drop((live, small, scope));
        let b = reg.block_bytes();
        assert_eq!(b.in_use, 0);
        assert!(b.cached > 0 && b.cached <= quota, "{b:?}");
        assert_eq!(reg.tenant().used(), 0);
    })
    .join()
    .unwrap();
}

/// A deployment whose quota holds its weights and a batch of 16's
/// activations but not a batch of 32's: one request runs, a batch of 32
/// fails alone with `QuotaExceeded` (another deployment keeps running
/// batches of 32), and behind a batcher with failure isolation the batch of
/// 32 is split and both halves succeed.
#[test]
fn a_batch_past_the_quota_fails_alone_and_succeeds_split() {
    let _serial = SERIAL.lock();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(past_the_quota());
}

async fn past_the_quota() {
    let pool = pool();
    let (len, rows) = (64, 32);
    // The activations of a batch of 16 and of 32 (peaks over the weights).
    let big = pool.tenant("big", Share::bytes(4 << 30)).unwrap();
    let other = minilm(&big, 2);
    let resting = big.used();
    let mut act = [0u64; 2];
    for (i, n) in [rows / 2, rows].into_iter().enumerate() {
        other.forward(batch(&other, n, len)).await.unwrap();
        act[i] = big.stats().peak_bytes - resting;
    }
    assert!(act[0] < act[1], "activations {act:?}");
    let quota = resting + (act[0] + act[1]) / 2;
    let small = pool.tenant("small", Share::bytes(quota)).unwrap();
    let model = minilm(&small, 2);
    let weights = small.used();
    assert_eq!(weights, resting);

    // One request fits.
    model.forward(batch(&model, 1, len)).await.unwrap();
    // A batch of 32 does not: a typed quota error of this batch only.
    let err = model.forward(batch(&model, rows, len)).await.unwrap_err();
    assert_eq!(err.kind(), ModelErrorKind::Quota, "{err}");
    let q = err.quota_exceeded().expect("the refusal");
    assert_eq!((q.tenant(), q.limit()), ("small", quota));
    assert!(q.used() + q.requested() > quota, "{q}");
    let boxed: BoxError = err.into();
    let source = boxed.source().expect("a source");
    assert!(source.is::<QuotaExceeded>());
    assert!(
        boxed.to_string().contains("memory quota exceeded"),
        "{boxed}"
    );
    // What the failed pass had allocated came back, inputs included.
    assert_eq!(small.used(), weights);
    // The other deployment is unaffected.
    other.forward(batch(&other, rows, len)).await.unwrap();
    assert_eq!(big.stats().quota_rejections, 0);

    // Behind a batcher with failure isolation: 32 requests make one batch,
    // refused, split into halves that fit.
    let rejected = small.stats().quota_rejections;
    let config = BatchConfig::builder()
        .max_batch_size(rows)
        .max_wait(Duration::from_secs(5))
        .queue_capacity(rows)
        .build()
        .unwrap();
    let served = model.clone();
    let service = BatchLayer::<Vec<NamedTensor>, Vec<NamedTensor>>::new(config)
        .isolate_failures()
        .layer(tower::service_fn(move |items: Vec<Vec<NamedTensor>>| {
            let model = served.clone();
            async move { model.forward(items).await.map_err(BoxError::from) }
        }));
    let mut calls = tokio::task::JoinSet::new();
    for item in batch(&model, rows, len) {
        calls.spawn(service.clone().oneshot(item));
    }
    let mut ok = 0;
    while let Some(answer) = calls.join_next().await {
        let outputs = answer.unwrap().unwrap();
        assert_eq!(outputs[0].tensor.shape, vec![1, 384]);
        ok += 1;
    }
    assert_eq!(ok, rows);
    assert!(
        small.stats().quota_rejections > rejected,
        "the batch of 32 was tried"
    );
    assert!(small.stats().peak_bytes <= quota);
    assert_eq!(small.used(), weights);
}

/// Two deployments with their own tenants running at once: each one's
/// bytes are charged to its own tenant, never the other's, whatever the
/// interleaving of their batches (proptest picks the batches, their sizes
/// and the order they are submitted in; the two model threads run them
/// concurrently).
#[test]
fn concurrent_deployments_are_charged_to_their_own_tenants() {
    let _serial = SERIAL.lock();
    let pool = pool();
    let tenants = [
        pool.tenant("left", Share::bytes(2 << 30)).unwrap(),
        pool.tenant("right", Share::bytes(2 << 30)).unwrap(),
    ];
    let models = [minilm(&tenants[0], 1), minilm(&tenants[1], 1)];
    let resting = [tenants[0].used(), tenants[1].used()];
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What one batch of (rows, len) charges, run alone.
    let alone: Mutex<HashMap<(usize, usize), u64>> = Mutex::default();
    let config = ProptestConfig {
        cases: 8,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    let ops = prop::collection::vec(
        (
            0usize..2,
            1usize..=8,
            prop::sample::select(vec![16usize, 32]),
        ),
        1..8,
    );
    proptest!(config, |(ops in ops)| {
        let mut alone = alone.lock();
        for &(_, rows, len) in &ops {
            if let std::collections::hash_map::Entry::Vacant(v) = alone.entry((rows, len)) {
                let before = hooks::charged_bytes("left");
                models[0].forward_blocking(batch(&models[0], rows, len)).unwrap();
                v.insert(hooks::charged_bytes("left") - before);
            }
        }
        let before = hooks::stats();
        let charged = [hooks::charged_bytes("left"), hooks::charged_bytes("right")];
        runtime.block_on(async {
            let mut calls = tokio::task::JoinSet::new();
            for &(m, rows, len) in &ops {
                let model = models[m].clone();
                let items = batch(&model, rows, len);
                calls.spawn(async move { model.forward(items).await });
            }
            while let Some(done) = calls.join_next().await {
                done.unwrap().unwrap();
            }
        });
        for (m, name) in ["left", "right"].into_iter().enumerate() {
            let want: u64 = ops
                .iter()
                .filter(|op| op.0 == m)
                .map(|&(_, rows, len)| alone[&(rows, len)])
                .sum();
            prop_assert_eq!(hooks::charged_bytes(name) - charged[m], want, "{}", name);
            prop_assert_eq!(tenants[m].used(), resting[m], "{}", name);
        }
        prop_assert_eq!(hooks::stats().unattributed_bytes, before.unattributed_bytes);
    });
}

/// On a GPU: libtorch's CUDA memory comes from the tenant's pool (its
/// quota refuses what does not fit), and a lease's stream can be made
/// libtorch's current stream.
#[cfg(feature = "cuda")]
#[test]
fn cuda_memory_comes_from_the_tenant_pool() {
    let _serial = SERIAL.lock();
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no GPU");
        return;
    }
    assert!(hooks::has_cuda(), "built without the CUDA headers");
    hooks::install_cuda().unwrap();
    let pool = GpuPool::auto(PoolConfig::default()).unwrap();
    let tenant = pool.tenant("cuda", Share::bytes(64 * MIB)).unwrap();
    let reg = hooks::register(tenant.clone()).unwrap();
    let scope = reg.enter();
    let t = tch::Tensor::zeros([4 << 20], (tch::Kind::Float, tch::Device::Cuda(0)));
    assert!(tenant.used() >= 16 * MIB, "used {}", tenant.used());
    let err =
        tch::Tensor::f_zeros([32 << 20], (tch::Kind::Float, tch::Device::Cuda(0))).unwrap_err();
    assert!(err.to_string().contains("memory quota exceeded"), "{err}");
    // The tenant's stream as libtorch's current one for a kernel.
    let cuda = pool.cuda().expect("a CUDA pool on a GPU");
    let stream = cuda.cuda_stream(tenant.next_stream()).expect("its stream");
    let on_stream = hooks::CudaStreamScope::enter(stream.cu_stream() as u64, 0).unwrap();
    let sum = (&t + 1.0).sum(tch::Kind::Float);
    drop(on_stream);
    assert_eq!(sum.double_value(&[]), f64::from(4u32 << 20));
    drop((t, sum, scope));
    assert_eq!(tenant.used(), 0);
}

/// On a GPU: three models at 0.3, 0.15 and 0.3 of its memory run
/// concurrently, each on its tenant's stream (libtorch's current stream
/// read from inside the pass), each one's peak within its quota; MiniLM
/// pushed past its 0.15 fails alone with the quota error while the other
/// two keep serving. (`scripts/gpu_check.sh` runs it.)
#[cfg(feature = "cuda")]
#[test]
fn three_models_share_a_gpu_within_their_fractions() {
    let _serial = SERIAL.lock();
    if !tch::Cuda::is_available() {
        eprintln!("skipped: no GPU");
        return;
    }
    hooks::install_cuda().unwrap();
    let pool = GpuPool::auto(PoolConfig::default()).unwrap();
    let opts = LoadOptions {
        device: Device::Cuda(0),
        intra_op_threads: 1,
        max_batch_size: 8,
        half: true,
        ..LoadOptions::default()
    };
    let models: Vec<(&str, Tenant, Model, usize)> = [
        ("resnet50", 0.3, 32),
        ("minilm", 0.15, 32),
        ("yolov8n", 0.3, 16),
    ]
    .into_iter()
    .map(|(name, fraction, rows)| {
        let tenant = pool.tenant(name, Share::fraction(fraction)).unwrap();
        let model = Model::load_for_tenant(&model_dir(name), &opts, tenant.clone()).unwrap();
        (name, tenant, model, rows)
    })
    .collect();
    // Each tenant's stream (kept alive while its passes run).
    let cuda = pool.cuda().expect("a CUDA pool on a GPU");
    let streams: Vec<_> = models
        .iter()
        .map(|(_, tenant, _, _)| cuda.cuda_stream(tenant.next_stream()).expect("its stream"))
        .collect();
    let handles: Vec<u64> = streams.iter().map(|s| s.cu_stream() as u64).collect();
    // Under load: 20 batches each, the three at once, each on its stream.
    std::thread::scope(|s| {
        for ((_, _, model, rows), &stream) in models.iter().zip(&handles) {
            s.spawn(move || {
                for _ in 0..20 {
                    model
                        .forward_blocking_on(batch(model, *rows, 128), Some(stream))
                        .unwrap();
                }
            });
        }
    });
    for ((name, _, model, _), &stream) in models.iter().zip(&handles) {
        assert_ne!(stream, 0, "{name}");
        assert_eq!(model.last_pass_stream(), stream, "{name} ran on its stream");
    }
    assert!(handles[0] != handles[1] && handles[1] != handles[2] && handles[0] != handles[2]);
    for (name, tenant, _, rows) in &models {
        let stats = tenant.stats();
        eprintln!(
            "{name} at batch {rows}: peak {} bytes of a {} quota, {} in use after",
            stats.peak_bytes,
            tenant.quota(),
            stats.used_bytes
        );
        assert!(stats.peak_bytes <= tenant.quota(), "{name}");
        assert_eq!(stats.quota_rejections, 0, "{name}");
    }
    // MiniLM past its quota (4096 rows of 512 tokens: ~25 GB of attention
    // scores in fp16) while the others serve.
    let (_, minilm_tenant, minilm, _) = &models[1];
    std::thread::scope(|s| {
        for (name, _, model, rows) in models.iter().filter(|m| m.0 != "minilm") {
            s.spawn(move || {
                for _ in 0..10 {
                    model
                        .forward_blocking(batch(model, *rows, 128))
                        .unwrap_or_else(|e| panic!("{name}: {e}"));
                }
            });
        }
        let err = minilm
            .forward_blocking(batch(minilm, 4096, 512))
            .unwrap_err();
        assert_eq!(err.kind(), ModelErrorKind::Quota, "{err}");
        eprintln!("minilm past its quota: {err}");
    });
    assert!(minilm_tenant.stats().quota_rejections >= 1);
    assert!(minilm_tenant.stats().peak_bytes <= minilm_tenant.quota());
    for (name, tenant, _, _) in models.iter().filter(|m| m.0 != "minilm") {
        assert_eq!(tenant.stats().quota_rejections, 0, "{name}");
    }
    // MiniLM serves again at its usual size.
    minilm.forward_blocking(batch(minilm, 32, 128)).unwrap();
}
