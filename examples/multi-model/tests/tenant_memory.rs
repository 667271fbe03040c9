//! `/v1/models` shows each version's tenant memory (in use, peak, quota),
//! the same figures as the per-tenant gauges on `/metrics`.

mod common;

use common::{start, tenant_gauge, TEST_CONFIG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn models_show_each_tenant_in_use_peak_and_quota_as_metrics_do() {
    let s = start(TEST_CONFIG).await;
    let m = s.models().await;
    let page = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    let mut versions = 0;
    for d in m["models"].as_array().unwrap() {
        for v in d["versions"].as_array().unwrap() {
            let tenant = format!(
                "{}/{}",
                d["name"].as_str().unwrap(),
                v["name"].as_str().unwrap()
            );
            let (in_use, peak, quota) = (
                v["tenant_bytes_in_use"].as_u64().unwrap(),
                v["tenant_bytes_peak"].as_u64().unwrap(),
                v["tenant_bytes_quota"].as_u64().unwrap(),
            );
            assert!(quota > 0, "{tenant}");
            assert!(
                in_use <= peak && peak <= quota,
                "{tenant}: {in_use} {peak} {quota}"
            );
            assert_eq!(
                tenant_gauge(&page, "convoy_gpu_pool_bytes_quota", &tenant),
                Some(quota as f64),
                "{tenant} on /metrics"
            );
            versions += 1;
        }
    }
    assert!(versions >= 2, "the test configuration's versions");
    s.shutdown().await;
}
