//! A real model's memory inside its deployment's tenant, through the
//! server: MiniLM is loaded into its version's tenant (the weights are its
//! resting bytes), each request's activations are charged there while it
//! runs, and a deployment whose quota is below a burst's activations
//! answers every request (its batches split by failure isolation, or 503
//! with the quota error) while another deployment keeps serving.

mod common;

use common::{models_config, start, tenant_gauge, Running};
use futures::future::join_all;
use hyper::StatusCode;
use serde_json::Value;

/// One server at a time: the tenants' gauges on `/metrics` are the
/// process's, and both tests name their tenant `minilm/1`.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Version `version` of deployment `name` in `/v1/models`.
async fn version(s: &Running, name: &str) -> Value {
    let m = s.models().await;
    m["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == name)
        .unwrap_or_else(|| panic!("{name} in {m}"))["versions"][0]
        .clone()
}

/// (in use, peak, quota) of a version's tenant.
fn tenant_bytes(v: &Value) -> (u64, u64, u64) {
    (
        v["tenant_bytes_in_use"].as_u64().unwrap(),
        v["tenant_bytes_peak"].as_u64().unwrap(),
        v["tenant_bytes_quota"].as_u64().unwrap(),
    )
}

/// A long text (~120 tokens), so that activations dwarf the warm-up's
/// (16 tokens).
fn text(i: usize) -> String {
    let words: Vec<String> = (0..120).map(|w| format!("w{}", (w * 7 + i) % 97)).collect();
    format!("request {i}: {}", words.join(" "))
}

async fn embed(s: &Running, name: &str, i: usize) -> StatusCode {
    let r = s
        .post(
            &format!("/v1/models/{name}/embed"),
            serde_json::json!([text(i)]).to_string(),
        )
        .await;
    if r.status != StatusCode::OK {
        let body = String::from_utf8_lossy(&r.body);
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body.contains("memory quota exceeded"), "{body}");
    }
    r.status
}

/// `n` concurrent requests to `name`.
async fn burst(s: &Running, name: &str, n: usize) -> Vec<StatusCode> {
    join_all((0..n).map(|i| embed(s, name, i))).await
}

fn minilm_config(extra: &str) -> String {
    models_config(&["minilm"], "").replace(
        "max_batch_size = 16\n",
        "max_batch_size = 32\nmax_wait = \"500ms\"\n",
    ) + extra
}

/// What the figures were under a roomy quota: the weights at rest, the
/// peak after a single request and after a burst of 32.
struct Measured {
    resting: u64,
    single_peak: u64,
    burst_peak: u64,
}

async fn measure() -> Measured {
    let s = start(&minilm_config("")).await;
    let tenant = "minilm/1";
    let (resting, warm_peak, quota) = tenant_bytes(&version(&s, "minilm").await);
    // The weights are charged to the version's tenant: its resting bytes.
    assert!(resting > 50 << 20, "MiniLM's weights: {resting} bytes");
    // 0.1 × 16 GiB.
    assert_eq!(quota, (0.1 * (16u64 << 30) as f64) as u64);
    assert!(warm_peak > resting, "the warm-up ran in the tenant");
    let page = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    assert_eq!(
        tenant_gauge(&page, "convoy_gpu_pool_bytes_in_use", tenant),
        Some(resting as f64)
    );
    assert_eq!(
        tenant_gauge(&page, "convoy_gpu_pool_bytes_quota", tenant),
        Some(quota as f64)
    );

    // One request: its activations raise the peak past the warm-up's.
    // (The peak is the higher of the warm-up's, 32 rows of 16 tokens, and
    // the request's.)
    assert_eq!(embed(&s, "minilm", 0).await, StatusCode::OK);
    let (in_use, single_peak, _) = tenant_bytes(&version(&s, "minilm").await);
    assert_eq!(in_use, resting, "back to the weights after a request");
    assert!(single_peak >= warm_peak);

    // A burst of 32: while it runs, bytes in use rise above the weights.
    let watch = async {
        let mut seen = resting;
        for _ in 0..2000 {
            let (in_use, _, _) = tenant_bytes(&version(&s, "minilm").await);
            seen = seen.max(in_use);
            if seen > resting {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
        seen
    };
    let (statuses, seen) = tokio::join!(burst(&s, "minilm", 32), watch);
    assert!(
        statuses.iter().all(|c| *c == StatusCode::OK),
        "{statuses:?}"
    );
    assert!(
        seen > resting,
        "in use during the burst: {seen} of {resting}"
    );
    let v = version(&s, "minilm").await;
    let (in_use, burst_peak, _) = tenant_bytes(&v);
    assert_eq!(in_use, resting, "back to the weights after the burst");
    let page = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    assert_eq!(
        tenant_gauge(&page, "convoy_gpu_pool_bytes_in_use", tenant),
        Some(resting as f64)
    );
    assert_eq!(
        tenant_gauge(&page, "convoy_gpu_pool_bytes_peak", tenant),
        Some(burst_peak as f64)
    );
    eprintln!(
        "minilm through the server: resting {resting} bytes (weights), warm-up peak {warm_peak}, \
         one request's peak {single_peak}, burst of 32 peak {burst_peak} ({} batches, mean {}), \
         seen in use during the burst {seen}",
        v["batch"]["batches"], v["batch"]["mean_batch_size"]
    );
    s.shutdown().await;
    Measured {
        resting,
        single_peak,
        burst_peak,
    }
}

/// MiniLM's weights are charged to its version's tenant at load (the
/// resting bytes, on `/v1/models` and `/metrics`), each request's
/// activations while it runs, and everything but the weights comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minilm_weights_rest_in_its_tenant_and_requests_raise_it() {
    let _serial = SERIAL.lock().await;
    let m = measure().await;
    assert!(
        m.burst_peak > m.single_peak,
        "{} {}",
        m.burst_peak,
        m.single_peak
    );
}

/// A deployment whose quota admits one request's activations but not a
/// burst of 32's: every request is answered (200, or 503 with the quota
/// error), none lost, its tenant never past its quota, and a roomy
/// deployment of the same model keeps serving meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_below_a_burst_answers_every_request_and_others_keep_serving() {
    let _serial = SERIAL.lock().await;
    let m = measure().await;
    let host: u64 = 16 << 30;
    let quota = m.resting + (m.single_peak - m.resting + m.burst_peak - m.resting) / 2;
    let fraction = quota as f64 / host as f64;
    let roomy = models_config(&["minilm"], "")
        .split("[[deployment]]")
        .nth(1)
        .unwrap()
        .replace("name = \"minilm\"", "name = \"roomy\"");
    let config = minilm_config(&format!("[[deployment]]{roomy}")).replacen(
        "kind = \"cpu\"\n",
        &format!("kind = \"cpu\"\nfraction = {fraction:.12}\n"),
        1,
    );
    let s = start(&config).await;
    let (resting, _, q) = tenant_bytes(&version(&s, "minilm").await);
    assert_eq!(resting, m.resting, "the same weights");
    assert!(q.abs_diff(quota) <= 16, "quota {q}, wanted {quota}");
    // A single request fits.
    assert_eq!(embed(&s, "minilm", 0).await, StatusCode::OK);

    let (small, other) = tokio::join!(burst(&s, "minilm", 32), burst(&s, "roomy", 32));
    assert_eq!(small.len(), 32, "every request answered");
    assert!(other.iter().all(|c| *c == StatusCode::OK), "{other:?}");
    let ok = small.iter().filter(|c| **c == StatusCode::OK).count();
    let v = version(&s, "minilm").await;
    let (in_use, peak, quota) = tenant_bytes(&v);
    assert_eq!(in_use, resting, "back to the weights");
    assert!(peak <= quota, "{peak} within {quota}");
    let batch = &v["batch"];
    let page = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
    let refused = tenant_gauge(&page, "convoy_gpu_pool_quota_rejections_total", "minilm/1");
    eprintln!(
        "quota {quota} bytes (weights {resting}): burst of 32 → {ok} answered 200, {} 503; \
         peak {peak}; batches {} (mean {}), isolation passes {}, isolated failures {}, \
         quota rejections {refused:?}",
        32 - ok,
        batch["batches"],
        batch["mean_batch_size"],
        batch["isolation_passes"],
        batch["isolated_failures"]
    );
    // The burst went past the quota, and only this deployment's tenant
    // refused anything.
    assert!(refused.unwrap_or(0.0) >= 1.0, "{refused:?}");
    assert_eq!(
        tenant_gauge(&page, "convoy_gpu_pool_quota_rejections_total", "roomy/1").unwrap_or(0.0),
        0.0
    );
    // What happened to those requests: the batches that did not fit were
    // split until they did (failure isolation), or requests failed alone
    // with the quota error (503, asserted in `embed`).
    assert!(
        batch["isolation_passes"].as_u64().unwrap() > 0 || ok < 32,
        "{batch}"
    );
    // The replica learned the largest batch that fits: it shows on
    // /v1/models, and the next bursts are formed under it, so none is
    // refused by the quota again.
    let failed = batch["quota_failed_batches"].as_u64().unwrap();
    assert!(failed >= 1, "{batch}");
    let limit = batch["size_limit"].as_u64().expect("a learned size limit");
    assert!((1..32).contains(&limit), "{batch}");
    for round in 0..2 {
        let again = burst(&s, "minilm", 32).await;
        assert!(again.iter().all(|c| *c == StatusCode::OK), "{again:?}");
        let page = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
        let now = tenant_gauge(&page, "convoy_gpu_pool_quota_rejections_total", "minilm/1");
        let v = version(&s, "minilm").await;
        eprintln!(
            "burst {} under the learned limit {limit}: quota rejections {now:?}, batches {}",
            round + 2,
            v["batch"]
        );
        assert_eq!(now, refused, "no quota failure under the learned limit");
        assert_eq!(v["batch"]["quota_failed_batches"].as_u64(), Some(failed));
    }
    // Still serving.
    assert_eq!(embed(&s, "minilm", 1).await, StatusCode::OK);
    assert_eq!(embed(&s, "roomy", 1).await, StatusCode::OK);
    s.shutdown().await;
}

/// A CPU model's quota is `device.fraction × server.host_memory`: one
/// under 1 MiB, fractions past the pool, or weights past the quota fail at
/// start, naming the fields.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quotas_that_cannot_hold_a_model_fail_at_start_naming_the_fields() {
    let _serial = SERIAL.lock().await;
    let with = |fraction: &str, host: u64| {
        models_config(&["minilm"], "")
            .replace(
                "host_memory = 17179869184",
                &format!("host_memory = {host}"),
            )
            .replace(
                "kind = \"cpu\"\n",
                &format!("kind = \"cpu\"\nfraction = {fraction}\n"),
            )
    };
    let start_err = |config: String| async move {
        let config = example_multi_model::Config::parse(&config).expect("parses");
        let e = example_multi_model::Server::start(config)
            .await
            .expect_err("refused at start")
            .to_string();
        eprintln!("refused: {}", e.lines().next().unwrap_or_default());
        e
    };
    // Under 1 MiB.
    let e = start_err(with("0.001", 512 << 20)).await;
    assert!(
        e.contains("device.fraction") && e.contains("server.host_memory") && e.contains("1 MiB"),
        "{e}"
    );
    // 32 MiB: MiniLM's weights (~90 MB) do not fit.
    let e = start_err(with("0.125", 256 << 20)).await;
    assert!(
        e.contains("device.fraction × server.host_memory")
            && e.contains(&(32u64 << 20).to_string()),
        "{e}"
    );
    // Two deployments of 0.6 of the pool each.
    let two = with("0.6", 16 << 30)
        + &models_config(&["minilm"], "")
            .split("[[deployment]]")
            .nth(1)
            .map(|d| {
                format!(
                    "[[deployment]]{}",
                    d.replace("name = \"minilm\"", "name = \"second\"")
                        .replace("kind = \"cpu\"\n", "kind = \"cpu\"\nfraction = 0.6\n")
                )
            })
            .unwrap();
    let e = start_err(two).await;
    assert!(
        e.contains("second/1") && e.contains("device.fraction × server.host_memory"),
        "{e}"
    );
}

/// ResNet-50 and YOLOv8n rest at their weights in their tenants and run
/// within the test configuration's quota (0.1 × 16 GiB); their figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn image_models_run_within_their_quota_and_rest_at_their_weights() {
    let _serial = SERIAL.lock().await;
    let s = start(&models_config(&["resnet50", "yolov8n"], "")).await;
    for (name, route) in [("resnet50", "classify"), ("yolov8n", "detect")] {
        let (resting, warm_peak, quota) = tenant_bytes(&version(&s, name).await);
        assert!(resting > 1 << 20, "{name}: weights {resting}");
        let png = std::fs::read(common::models_dir().join(name).join("1/reference.png")).unwrap();
        let path = format!("/v1/models/{name}/{route}");
        let replies = join_all((0..4).map(|_| s.post(&path, png.clone()))).await;
        assert!(replies.iter().all(|r| r.status == StatusCode::OK));
        let (in_use, peak, _) = tenant_bytes(&version(&s, name).await);
        assert_eq!(in_use, resting, "{name}: back to the weights");
        assert!(peak <= quota, "{name}: {peak} within {quota}");
        eprintln!(
            "{name} through the server: resting {resting} bytes (weights), warm-up peak \
             {warm_peak}, peak after 4 requests {peak}, quota {quota}"
        );
    }
    s.shutdown().await;
}
