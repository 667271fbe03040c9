//! The real models end to end (ResNet-50, MiniLM, YOLOv8n exported by
//! `scripts/export_models.py` into the repository's `models/`): answers,
//! agreement with the Python reference, batching, and bad input answered
//! 4xx with the server healthy afterwards.

mod common;

use common::{models_config, models_dir, start, Running};
use futures::future::join_all;
use hyper::StatusCode;

async fn server() -> Option<Running> {
    Some(start(&models_config(&["resnet50", "minilm", "yolov8n"], "")).await)
}

fn reference_png(dir: &str) -> Vec<u8> {
    std::fs::read(models_dir().join(dir).join("1/reference.png")).unwrap()
}

async fn healthy(s: &Running) {
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
}

fn cosine(a: &[f64], b: &[f64]) -> f64 {
    let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(a) * n(b))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_models_answer_and_refuse_bad_input() {
    let Some(s) = server().await else { return };

    // classify: 5 labels with scores in (0, 1].
    let r = s
        .post("/v1/models/resnet50/classify", reference_png("resnet50"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let classes = r.json()["classes"].as_array().unwrap().clone();
    assert_eq!(classes.len(), 5);
    for c in &classes {
        let score = c["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{c}");
        assert!(!c["label"].as_str().unwrap().is_empty());
    }

    // embed: the Python reference, cosine ≥ 0.999.
    let reference: serde_json::Value = serde_json::from_slice(
        &std::fs::read(models_dir().join("minilm/1/reference.json")).unwrap(),
    )
    .unwrap();
    let body = serde_json::json!({ "texts": reference["sentences"] });
    let r = s.post("/v1/models/minilm/embed", body.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let got = r.json()["embeddings"].as_array().unwrap().clone();
    let want = reference["embeddings"].as_array().unwrap();
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let v = |x: &serde_json::Value| -> Vec<f64> {
            x.as_array()
                .unwrap()
                .iter()
                .map(|f| f.as_f64().unwrap())
                .collect()
        };
        let c = cosine(&v(g), &v(w));
        assert!(c >= 0.999, "cosine {c}");
    }

    // detect: boxes inside the image.
    let r = s
        .post("/v1/models/yolov8n/detect", reference_png("yolov8n"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    let out = r.json();
    let (w, h) = (
        out["width"].as_f64().unwrap(),
        out["height"].as_f64().unwrap(),
    );
    for d in out["detections"].as_array().unwrap() {
        let b: Vec<f64> = d["bbox"]
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        assert!(
            b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h && b[0] <= b[2] && b[1] <= b[3],
            "{d}"
        );
    }

    // 32 concurrent embed requests form batches > 1.
    let replies = join_all((0..32).map(|i| {
        let s = &s;
        async move {
            s.post(
                "/v1/models/minilm/embed",
                serde_json::json!([format!("request number {i} to convoy")]).to_string(),
            )
            .await
        }
    }))
    .await;
    assert!(replies.iter().all(|r| r.status == StatusCode::OK));
    let models = s.models().await;
    let minilm = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "minilm")
        .unwrap()
        .clone();
    let mean = minilm["versions"][0]["batch"]["mean_batch_size"]
        .as_f64()
        .unwrap();
    assert!(mean > 1.0, "mean batch size {mean}");

    // Bad input: each a 4xx with a message, the server healthy after it.
    let mut truncated = std::fs::read(models_dir().join("resnet50/1/reference.png")).unwrap();
    truncated.truncate(truncated.len() / 3);
    let mut bomb = Vec::new();
    bomb.extend_from_slice(b"\x89PNG\r\n\x1a\n\x00\x00\x00\x0dIHDR");
    bomb.extend_from_slice(&40000u32.to_be_bytes());
    bomb.extend_from_slice(&40000u32.to_be_bytes());
    bomb.extend_from_slice(&[8, 2, 0, 0, 0, 0, 0, 0, 0]);
    let long = "convoy ".repeat(100_000 / 7 + 1);
    for (path, body, statuses) in [
        (
            "/v1/models/resnet50/classify",
            b"definitely not an image".to_vec(),
            &[400, 422][..],
        ),
        ("/v1/models/resnet50/classify", truncated, &[400, 422]),
        ("/v1/models/yolov8n/detect", bomb, &[400, 413, 422]),
        (
            "/v1/models/minilm/embed",
            br#"{"texts": []}"#.to_vec(),
            &[422],
        ),
        ("/v1/models/bert/embed", br#"["x"]"#.to_vec(), &[404]),
    ] {
        let r = s.post(path, body).await;
        assert!(
            statuses.contains(&r.status.as_u16()),
            "{path}: {} {:?}",
            r.status,
            r.body
        );
        let msg = r.json()["error"].as_str().unwrap().to_string();
        assert!(!msg.is_empty());
        healthy(&s).await;
    }
    // A 100k-character text is truncated and still answered.
    let r = s
        .post(
            "/v1/models/minilm/embed",
            serde_json::json!([long]).to_string(),
        )
        .await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["embeddings"][0].as_array().unwrap().len(), 384);
    healthy(&s).await;
    s.shutdown().await;
}

/// A request of several texts is served by one version, whatever the
/// split: its texts are tokenized together by that version's tokenizer
/// and batched there. Two MiniLM versions at 50/50; each request's texts
/// all land on one of them (the per-version request counts move by the
/// whole request), and both versions serve some requests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_texts_of_one_request_go_to_one_version() {
    let dir = tempfile::tempdir().unwrap();
    let minilm = dir.path().join("minilm");
    std::fs::create_dir(&minilm).unwrap();
    for v in ["1", "2"] {
        std::os::unix::fs::symlink(models_dir().join("minilm/1"), minilm.join(v)).unwrap();
    }
    let config = format!(
        "[server]\naddr = \"127.0.0.1:0\"\nmodels_dir = {:?}\nblocking_tasks = 2\n\
         host_memory = 4294967296\n\n\
         [[deployment]]\nname = \"minilm\"\nmodel = \"minilm\"\n\
         [[deployment.version]]\nname = \"1\"\nweight = 50\n\
         [[deployment.version]]\nname = \"2\"\nweight = 50\n\
         [deployment.batching]\nmax_batch_size = 8\n\
         [deployment.device]\nkind = \"cpu\"\nintra_op_threads = 1\nfraction = 0.1\n",
        dir.path().display().to_string()
    );
    let s = start(&config).await;
    let counts = |m: serde_json::Value| -> Vec<u64> {
        let d = m["models"]
            .as_array()
            .unwrap()
            .iter()
            .find(|d| d["name"] == "minilm")
            .unwrap()
            .clone();
        let mut v: Vec<(String, u64)> = d["versions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| {
                let name = v["name"].as_str().unwrap().to_string();
                (name, v["requests"].as_u64().unwrap())
            })
            .collect();
        v.sort();
        v.into_iter().map(|(_, n)| n).collect()
    };
    const TEXTS: u64 = 6;
    let texts: Vec<String> = (0..TEXTS)
        .map(|i| format!("sentence number {i} about convoys"))
        .collect();
    let body = serde_json::json!({ "texts": texts }).to_string();
    let mut before = counts(s.get("/v1/models").await.json());
    let mut served_by = [0u32; 2];
    for _ in 0..16 {
        let r = s.post("/v1/models/minilm/embed", body.clone()).await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        assert_eq!(
            r.json()["embeddings"].as_array().unwrap().len(),
            TEXTS as usize
        );
        let after = counts(s.get("/v1/models").await.json());
        let moved: Vec<u64> = after.iter().zip(&before).map(|(a, b)| a - b).collect();
        match moved.as_slice() {
            [n, 0] if *n == TEXTS => served_by[0] += 1,
            [0, n] if *n == TEXTS => served_by[1] += 1,
            other => panic!("one request's texts spread over the versions: {other:?}"),
        }
        before = after;
    }
    // 16 requests at 50/50: both versions serve (all on one: p = 2^-15).
    assert!(served_by.iter().all(|&n| n > 0), "{served_by:?}");
}

/// Short texts of different lengths share a batch (`shortest_bucket`,
/// default 32 tokens), each padded to the batch's longest, and get the
/// embeddings they get batched by length; with `shortest_bucket = 1` every
/// power-of-two length has batches of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_texts_of_different_lengths_share_a_batch() {
    let deployment = |name: &str, extra: &str| {
        format!(
            "[[deployment]]\nname = \"{name}\"\nmodel = \"minilm\"\n\
             [deployment.batching]\nmax_batch_size = 8\nadaptive = false\n\
             max_wait = \"300ms\"\n{extra}\n\
             [deployment.device]\nkind = \"cpu\"\nintra_op_threads = 1\nfraction = 0.1\n\n"
        )
    };
    let config = format!(
        "[server]\naddr = \"127.0.0.1:0\"\nmodels_dir = {:?}\nblocking_tasks = 2\n\
         host_memory = 4294967296\n\n{}{}",
        models_dir().display().to_string(),
        deployment("shared", ""),
        deployment("by-length", "shortest_bucket = 1")
    );
    let s = start(&config).await;
    let batches = |metrics: &str, name: &str| -> u64 {
        let prefix = format!("convoy_batcher_batch_size_count{{batcher=\"{name}/1\"}} ");
        metrics
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .map_or(0, |v| v.trim().parse().unwrap())
    };
    // 3 and 15 tokens with [CLS] and [SEP]: power-of-two buckets 4 and 16.
    let texts = [
        "hi",
        "a longer sentence with quite a few more words in it than that",
    ];
    let body = serde_json::json!({ "texts": texts }).to_string();
    let mut answers = Vec::new();
    for name in ["shared", "by-length"] {
        let before = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
        let r = s
            .post(&format!("/v1/models/{name}/embed"), body.clone())
            .await;
        assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
        let after = String::from_utf8_lossy(&s.get("/metrics").await.body).into_owned();
        let ran = batches(&after, name) - batches(&before, name);
        // Both texts wait (max_wait) in the queue together: one batch when
        // they share a key, one per key otherwise.
        let want = if name == "shared" { 1 } else { 2 };
        assert_eq!(ran, want, "{name}: {ran} batches for two texts");
        let embeddings: Vec<Vec<f64>> = r.json()["embeddings"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                e.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_f64().unwrap())
                    .collect()
            })
            .collect();
        answers.push(embeddings);
    }
    // Padding the short text to the long one's length changes nothing the
    // attention mask lets through.
    for (a, b) in answers[0].iter().zip(&answers[1]) {
        assert!(cosine(a, b) > 0.9999, "cosine {}", cosine(a, b));
    }
}
