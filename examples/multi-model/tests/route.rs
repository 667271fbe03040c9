//! One entry point per deployment (`Deployment::call`), the same on v1,
//! KServe v2 REST and v2 gRPC:
//! - pre- and post-processing follow the version that serves the request:
//!   a canary with its own labels and normalisation (a TorchScript model,
//!   the real tch path) is answered with its own labels, from inputs made
//!   by its own rules, whether the split or a pin sends the request there;
//! - the request ends at the earlier of the server's request timeout and
//!   the client's deadline, on every protocol, even while the model still
//!   runs;
//! - a pinned version is honoured on every protocol, an unknown one
//!   refused, and a request refused by the contract is not counted as the
//!   version's error.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use common::{export_poison, start, Grpc, Running};
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::model_infer_request::InferInputTensor;
use example_kserve::proto::{InferTensorContents, ModelInferRequest};
use hyper::{Method, StatusCode};
use tokio::time::Instant;
use tonic::transport::Channel;
use tonic::Code;

/// Values per item of the poison model: one 8×8 RGB image.
const LEN: usize = 3 * 8 * 8;

/// Version 2's labels (version 1's are `zero`, `one`, `two`, `three`).
const CANARY_LABELS: [&str; 4] = ["cat", "dog", "fox", "owl"];

/// Version 2's normalisation mean (version 1's is 0).
const CANARY_MEAN: f32 = 0.5;

/// `poison` version 1 as exported, and version 2: the same weights with
/// other labels and another normalisation.
fn export_versions(dir: &Path) {
    export_poison(dir);
    let (one, two) = (dir.join("poison/1"), dir.join("poison/2"));
    std::fs::create_dir_all(&two).unwrap();
    std::fs::copy(one.join("model.pt"), two.join("model.pt")).unwrap();
    std::fs::write(two.join("labels.txt"), CANARY_LABELS.join("\n") + "\n").unwrap();
    let mut manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(one.join("model.json")).unwrap()).unwrap();
    manifest["version"] = "2".into();
    manifest["preprocess"]["mean"] = serde_json::json!([CANARY_MEAN, CANARY_MEAN, CANARY_MEAN]);
    std::fs::write(two.join("model.json"), manifest.to_string()).unwrap();
}

/// Both versions, all traffic on version 2 (the canary), version 1 first
/// (the one pre- and post-processing used to follow).
fn canary_config(models_dir: &Path) -> String {
    config(
        models_dir,
        "60s",
        "poison",
        "model = \"poison\"",
        (0, 100),
        "max_batch_size = 4",
    )
}

/// A server with one deployment `name` of two versions ("1", "2") weighted
/// `weights`: `model` (its model lines) and `batching` (its batching
/// table) as given, on the CPU; the server's request timeout `timeout`.
fn config(
    models_dir: &Path,
    timeout: &str,
    name: &str,
    model: &str,
    weights: (u32, u32),
    batching: &str,
) -> String {
    let models_dir = models_dir.display().to_string();
    let (one, two) = weights;
    format!(
        "[server]\naddr = \"127.0.0.1:0\"\nmodels_dir = {models_dir:?}\n\
         request_timeout = \"{timeout}\"\nblocking_tasks = 2\n\n\
         [[deployment]]\nname = \"{name}\"\n{model}\n\
         [[deployment.version]]\nname = \"1\"\nweight = {one}\n\
         [[deployment.version]]\nname = \"2\"\nweight = {two}\n\
         [deployment.batching]\n{batching}\n\
         [deployment.device]\nkind = \"cpu\"\nintra_op_threads = 1\n"
    )
}

/// An 8×8 picture, varied, well below the poison marker.
fn pixels() -> Vec<u8> {
    (0..LEN).map(|j| ((j * 37 + j % 7) % 200) as u8).collect()
}

fn png() -> Vec<u8> {
    let image = image::RgbImage::from_raw(8, 8, pixels()).unwrap();
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("PNG encoding");
    out.into_inner()
}

/// The model's input for [`pixels`] normalised with `mean`: channel-major
/// `[3, 8, 8]`.
fn values(mean: f32) -> Vec<f32> {
    let px = pixels();
    (0..3)
        .flat_map(|c| (0..64).map(move |p| (c, p)))
        .map(|(c, p)| f32::from(px[p * 3 + c]) / 255.0 - mean)
        .collect()
}

fn softmax(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::MIN, f32::max);
    let e: Vec<f32> = logits.iter().map(|x| (x - max).exp()).collect();
    let sum: f32 = e.iter().sum();
    e.iter().map(|x| x / sum).collect()
}

/// Version 2's logits for `input` over KServe v2 REST.
async fn logits(s: &Running, input: Vec<f32>) -> Vec<f32> {
    let body = serde_json::json!({
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": input}]
    });
    let r = s
        .post("/v2/models/poison/versions/2/infer", body.to_string())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    r.json()["outputs"][0]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// `POST /v1/models/poison/classify` of [`png`], pinned to `version` if
/// given: the version that answered, and each class's label and score by
/// index.
async fn classify(s: &Running, version: Option<&str>) -> (String, Vec<(String, f32)>) {
    let mut headers = vec![("content-type", "image/png")];
    if let Some(v) = version {
        headers.push(("x-convoy-version", v));
    }
    let r = s
        .request(
            Method::POST,
            "/v1/models/poison/classify",
            Bytes::from(png()),
            &headers,
        )
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let json = r.json();
    let mut classes = vec![(String::new(), f32::NAN); 4];
    for c in json["classes"].as_array().unwrap() {
        classes[c["index"].as_u64().unwrap() as usize] = (
            c["label"].as_str().unwrap().to_string(),
            c["score"].as_f64().unwrap() as f32,
        );
    }
    (json["version"].as_str().unwrap().to_string(), classes)
}

fn assert_close(got: &[(String, f32)], want: &[f32], what: &str) {
    for ((_, g), w) in got.iter().zip(want) {
        assert!((g - w).abs() <= 1e-3, "{what}: {got:?} vs {want:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_is_processed_by_its_own_manifest() {
    let tmp = tempfile::tempdir().unwrap();
    export_versions(tmp.path());
    let s = start(&canary_config(tmp.path())).await;
    // What version 2 answers by its own rules (mean 0.5), and what it would
    // answer by version 1's (mean 0): different enough to tell apart.
    let own = softmax(&logits(&s, values(CANARY_MEAN)).await);
    let foreign = softmax(&logits(&s, values(0.0)).await);
    assert!(
        own.iter().zip(&foreign).any(|(a, b)| (a - b).abs() > 0.05),
        "{own:?} vs {foreign:?}"
    );

    // The split sends every request to version 2: its labels, its inputs.
    for pinned in [None, Some("2")] {
        let (version, classes) = classify(&s, pinned).await;
        assert_eq!(version, "2");
        let labels: Vec<&str> = classes.iter().map(|(l, _)| l.as_str()).collect();
        assert_eq!(labels, CANARY_LABELS, "{pinned:?}");
        assert_close(&classes, &own, "version 2 by its own rules");
    }

    // Pinned to version 1 (weight 0): version 1's labels and rules.
    let (version, classes) = classify(&s, Some("1")).await;
    assert_eq!(version, "1");
    let labels: Vec<&str> = classes.iter().map(|(l, _)| l.as_str()).collect();
    assert_eq!(labels, ["zero", "one", "two", "three"]);
    assert_close(&classes, &foreign, "version 1 by its own rules");
    s.shutdown().await;
}

/// Identity model `m`, versions 1 (all traffic) and 2, each batch taking
/// `delay`; the server's request timeout `timeout`.
fn slow_config(timeout: &str, delay: &str) -> String {
    config(
        Path::new("models"),
        timeout,
        "m",
        &format!("model = \"identity\"\nidentity_delay = \"{delay}\""),
        (100, 0),
        // Every request of the timeout test runs in the model at once:
        // none waits queued, so the timeout ends requests the model is
        // still running.
        "max_batch_size = 8\nmax_concurrent_batches = 16\nqueue_timeout = \"60s\"",
    )
}

fn rest_body() -> String {
    serde_json::json!({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]
    })
    .to_string()
}

fn grpc_request(version: &str, shape: Vec<i64>) -> ModelInferRequest {
    let n = shape.iter().product::<i64>() as usize;
    ModelInferRequest {
        model_name: "m".into(),
        model_version: version.into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape,
            parameters: HashMap::new(),
            contents: Some(InferTensorContents {
                fp32_contents: vec![1.0; n],
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

/// Outcome of one request: the HTTP status, or the gRPC code, and the
/// message; how long it took.
#[derive(Debug)]
struct Timed {
    status: String,
    message: String,
    took: Duration,
}

/// One request on `protocol` (`v1`, `rest`, `grpc`), with the client's own
/// deadline `deadline` if given.
async fn timed(
    s: &Running,
    grpc: &mut GrpcInferenceServiceClient<Channel>,
    protocol: &str,
    deadline: Option<&str>,
) -> Timed {
    let start = Instant::now();
    let (status, message) = match protocol {
        "grpc" => {
            let mut request = tonic::Request::new(grpc_request("", vec![1, 2]));
            if let Some(d) = deadline {
                request
                    .metadata_mut()
                    .insert("grpc-timeout", d.parse().unwrap());
            }
            match grpc.model_infer(request).await {
                Ok(_) => ("Ok".to_string(), String::new()),
                Err(e) => (format!("{:?}", e.code()), e.message().to_string()),
            }
        }
        _ => {
            let path = match protocol {
                "v1" => "/v1/models/m/infer",
                _ => "/v2/models/m/infer",
            };
            let mut headers = vec![("content-type", "application/json")];
            if let Some(d) = deadline {
                headers.push(("grpc-timeout", d));
            }
            let r = s
                .request(Method::POST, path, Bytes::from(rest_body()), &headers)
                .await;
            let message = String::from_utf8_lossy(&r.body).to_string();
            (r.status.as_u16().to_string(), message)
        }
    };
    Timed {
        status,
        message,
        took: start.elapsed(),
    }
}

fn assert_timed_out(t: &Timed, protocol: &str, what: &str) {
    let expected = if protocol == "grpc" {
        "DeadlineExceeded"
    } else {
        "504"
    };
    // tonic's server enforces a client's `grpc-timeout` itself, at the same
    // instant, answering CANCELLED "Timeout expired" when its timer wins.
    let tonic_won = protocol == "grpc" && t.status == "Cancelled" && t.message == "Timeout expired";
    assert!(
        t.status == expected || (tonic_won && what.contains("deadline 300m")),
        "{protocol} {what}: {t:?}"
    );
    // The model takes 3 s: the answer came at the limit, not after it
    // (the limit is 300 ms; a loaded runner may add a second or two).
    assert!(
        t.took < Duration::from_millis(2900),
        "{protocol} {what}: {t:?}"
    );
}

/// `config` served over HTTP and gRPC, and a gRPC client.
async fn serve(config: &str) -> (Running, Grpc, GrpcInferenceServiceClient<Channel>) {
    let s = start(config).await;
    let g = s.serve_grpc().await;
    let client = GrpcInferenceServiceClient::connect(format!("http://{}", g.addr))
        .await
        .unwrap();
    (s, g, client)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_request_timeout_and_the_clients_deadline_apply_on_every_protocol() {
    // The server's timeout (300 ms) is the smaller: it ends the request on
    // every protocol, with or without a longer client deadline.
    let (s, g, mut grpc) = serve(&slow_config("300ms", "3s")).await;
    for protocol in ["v1", "rest", "grpc"] {
        for deadline in [None, Some("20S")] {
            let t = timed(&s, &mut grpc, protocol, deadline).await;
            assert_timed_out(
                &t,
                protocol,
                &format!("timeout 300ms, deadline {deadline:?}"),
            );
            assert!(
                t.message.contains("request timeout (300ms)"),
                "{protocol}: {t:?}"
            );
        }
    }
    g.shutdown().await;
    s.shutdown().await;

    // The client's deadline (300 ms) is the smaller: it ends the request.
    let (s, g, mut grpc) = serve(&slow_config("20s", "3s")).await;
    for protocol in ["v1", "rest", "grpc"] {
        let t = timed(&s, &mut grpc, protocol, Some("300m")).await;
        assert_timed_out(&t, protocol, "timeout 20s, deadline 300m");
        assert!(
            t.message.contains("deadline") || t.message == "Timeout expired",
            "{protocol}: {t:?}"
        );
    }
    // A v1 deadline that is not a timeout is the client's error.
    let t = timed(&s, &mut grpc, "v1", Some("soon")).await;
    assert_eq!(t.status, "400", "{t:?}");
    g.shutdown().await;
    s.shutdown().await;
}

/// `POST /v1/models/m/infer` pinned to `version`.
async fn v1_pinned(s: &Running, version: &str) -> common::Reply {
    s.request(
        Method::POST,
        "/v1/models/m/infer",
        Bytes::from(rest_body()),
        &[
            ("content-type", "application/json"),
            ("x-convoy-version", version),
        ],
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_is_honoured_on_every_protocol() {
    // Version 2 has weight 0: only a pin reaches it.
    let (s, g, mut grpc) = serve(&slow_config("10s", "0s")).await;
    for version in ["1", "2"] {
        let r = v1_pinned(&s, version).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["model_version"], version, "v1");

        let r = s
            .post(
                &format!("/v2/models/m/versions/{version}/infer"),
                rest_body(),
            )
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(r.json()["model_version"], version, "REST");

        let r = grpc
            .model_infer(grpc_request(version, vec![1, 2]))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.model_version, version, "gRPC");
    }
    // Unpinned, every request goes to version 1.
    for _ in 0..5 {
        let r = s.post("/v2/models/m/infer", rest_body()).await;
        assert_eq!(r.json()["model_version"], "1");
    }

    // An unknown version: 400 on v1 (a header), 404 on v2 (a resource).
    let r = v1_pinned(&s, "9").await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST, "{:?}", r.body);
    assert!(r.json()["error"].as_str().unwrap().contains("no version"));
    let r = s.post("/v2/models/m/versions/9/infer", rest_body()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let e = grpc
        .model_infer(grpc_request("9", vec![1, 2]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);

    // A request the contract refuses (no rows), pinned to version 2, is
    // the caller's error: the version counts no error, its batcher admits
    // nothing.
    let d = s.server.deployment("m").unwrap();
    let admitted = d.version("2").unwrap().batch_stats().requests;
    let e = grpc
        .model_infer(grpc_request("2", vec![0, 2]))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert_eq!(d.version("2").unwrap().batch_stats().requests, admitted);
    let models = s.models().await;
    let versions = models["models"][0]["versions"].as_array().unwrap();
    assert!(versions.iter().all(|v| v["errors"] == 0), "{versions:#?}");
    g.shutdown().await;
    s.shutdown().await;
}
