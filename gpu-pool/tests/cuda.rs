//! CUDA backend tests: they need the `cuda` feature and a GPU, and report
//! "skipped: no GPU" (passing) on machines without one.
#![cfg(feature = "cuda")]

use convoy_gpu_pool::{
    Backend, BackendKind, CudaBackend, GpuPool, NoGpu, PoolConfig, QuotaExceeded, RawAlloc, Share,
};

fn device() -> Option<CudaBackend> {
    match CudaBackend::new(0) {
        Ok(b) => Some(b),
        Err(e) if e.is::<NoGpu>() => {
            eprintln!("skipped: no GPU ({e})");
            None
        }
        Err(e) => panic!("CUDA present but unusable: {e}"),
    }
}

#[test]
fn missing_driver_or_device_is_an_error_not_a_panic() {
    match CudaBackend::new(0) {
        Ok(b) => assert_eq!(b.kind(), BackendKind::Cuda),
        Err(e) => assert!(e.is::<NoGpu>(), "{e}"),
    }
    // An ordinal far out of range is NoGpu either way.
    let e = CudaBackend::new(1 << 20).unwrap_err();
    assert!(e.is::<NoGpu>(), "{e}");
}

#[test]
fn auto_picks_cuda_when_present() {
    let pool = GpuPool::auto(PoolConfig::default().host_capacity(16 << 20)).unwrap();
    match device() {
        Some(_) => assert_eq!(pool.backend_kind(), BackendKind::Cuda),
        None => {
            assert_eq!(pool.backend_kind(), BackendKind::Host);
            assert!(pool.fallback_reason().is_some());
        }
    }
}

#[test]
fn quotas_and_streams_on_a_real_device() {
    let Some(dev) = device() else { return };
    let range = dev.priority_range();
    let pool = GpuPool::new(dev, PoolConfig::default()).unwrap();
    let a = pool.tenant("a", Share::fraction(0.01).streams(2)).unwrap();
    let b = pool.tenant("b", Share::fraction(0.01)).unwrap();
    let x = a.alloc(1 << 20).unwrap();
    assert_ne!(x.device_ptr(), 0);
    assert!(a.alloc(a.quota()).unwrap_err().is::<QuotaExceeded>());
    let y = b.alloc(1 << 20).unwrap();
    assert_ne!(x.device_ptr(), y.device_ptr());
    drop((x, y));
    assert!(range.greatest <= range.least);
    pool.poll_events();
    assert_eq!(pool.stats().allocated_bytes, 0);
}

#[test]
fn raw_driver_allocations_work() {
    let Some(dev) = device() else { return };
    dev.raw_alloc_free(1 << 20, RawAlloc::Sync).unwrap();
    dev.raw_alloc_free(1 << 20, RawAlloc::Async).unwrap();
}
