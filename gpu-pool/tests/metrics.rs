//! Per-tenant metrics reach the `metrics` recorder under the documented names.

use std::collections::HashMap;

use convoy_gpu_pool::metrics::names;
use convoy_gpu_pool::{GpuPool, HostBackend, HostConfig, PoolConfig, Share};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};

#[test]
fn tenant_metrics_are_recorded() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let pool = GpuPool::new(
            HostBackend::new(HostConfig::with_capacity(64 << 20)),
            PoolConfig::default().headroom(1.0),
        )
        .unwrap();
        let t = pool.tenant("bert", Share::bytes(4 << 20)).unwrap();
        let a = t.alloc(1 << 20).unwrap();
        let b = t.alloc(1 << 20).unwrap();
        drop(a);
        assert!(t.alloc(8 << 20).is_err());
        drop(b);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let slot = t.acquire_slot().await.unwrap();
            tokio::time::advance(std::time::Duration::from_millis(3)).await;
            drop(slot);
        });
    });
    let got: HashMap<String, DebugValue> = snapshotter
        .snapshot()
        .into_vec()
        .into_iter()
        .filter(|(k, ..)| {
            k.key()
                .labels()
                .any(|l| l.key() == "tenant" && l.value() == "bert")
        })
        .map(|(k, _, _, v)| (k.key().name().to_owned(), v))
        .collect();
    let gauge = |n: &str| match got.get(n) {
        Some(DebugValue::Gauge(v)) => v.into_inner(),
        other => panic!("{n}: {other:?}"),
    };
    let counter = |n: &str| match got.get(n) {
        Some(DebugValue::Counter(v)) => *v,
        other => panic!("{n}: {other:?}"),
    };
    assert_eq!(gauge(names::BYTES_QUOTA), (4 << 20) as f64);
    assert_eq!(gauge(names::BYTES_PEAK), (2 << 20) as f64);
    assert_eq!(gauge(names::BYTES_IN_USE), 0.0);
    assert_eq!(counter(names::ALLOCATIONS), 2);
    assert_eq!(counter(names::QUOTA_REJECTIONS), 1);
    assert_eq!(counter(names::OOM), 0);
    assert_eq!(counter(names::SLOT_BUSY), 3000);
    match got.get(names::SLOT_WAIT) {
        Some(DebugValue::Histogram(v)) => assert_eq!(v.len(), 1),
        other => panic!("slot wait: {other:?}"),
    }
}
