//! The v1 routes take what FastAPI clients send: `classify` and `detect` a
//! raw image, `multipart/form-data` image parts or base64 JSON images;
//! `embed` JSON texts or multipart text parts. Several parts are answered
//! with a list in order, a part that fails with its own entry, and each
//! part is its own item for the batcher. The limits of `[server.uploads]`
//! hold per part and per request.

mod common;

use base64::Engine;
use common::{
    models_config, other_jpeg, reference_jpeg, start, FormPart, Reply, Running, TEST_CONFIG,
};
use hyper::StatusCode;
use serde_json::Value;

/// Small limits, so that every one is easy to cross.
const LIMITS: &str =
    "[server.uploads]\nmax_parts = 6\nmax_part_bytes = 1000000\nmax_pixels = 1000000\n";

/// A part over `max_part_bytes`.
fn oversized() -> Vec<u8> {
    vec![0xff; 1_000_001]
}

/// A valid PNG of 1200×1000 pixels: over `max_pixels`, under the bytes.
fn too_many_pixels() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::RgbImage::new(1200, 1000)
        .write_to(&mut out, image::ImageFormat::Png)
        .unwrap();
    let png = out.into_inner();
    assert!(png.len() < 1_000_000);
    png
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// The start of a body, for failure messages (embeddings run long).
fn head(body: &[u8]) -> String {
    String::from_utf8_lossy(&body[..body.len().min(600)]).into_owned()
}

fn ok(r: &Reply) -> Value {
    assert_eq!(r.status, StatusCode::OK, "{}", head(&r.body));
    r.json()
}

/// A list answer's entries, `n` of them.
fn entries(r: &Reply, n: usize) -> Vec<Value> {
    let list = ok(r).as_array().expect("a list answer").clone();
    assert_eq!(list.len(), n, "one entry per part: {}", head(&r.body));
    list
}

/// An error entry's or error answer's status, after checking that its
/// message mentions `needle`.
fn error_entry(entry: &Value, status: u16, needle: &str) {
    assert_eq!(
        entry["status"],
        status,
        "{}",
        head(entry.to_string().as_bytes())
    );
    let message = entry["error"].as_str().expect("an error message");
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

fn error_reply(r: &Reply, status: StatusCode, needle: &str) {
    assert_eq!(r.status, status, "{}", head(&r.body));
    let message = r.json()["error"].as_str().unwrap().to_string();
    assert!(message.contains(needle), "{message:?} lacks {needle:?}");
}

/// Items the deployment's batchers admitted so far.
async fn items(s: &Running, name: &str) -> u64 {
    let models = s.models().await;
    let d = models["models"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == name)
        .unwrap()
        .clone();
    d["versions"][0]["batch"]["requests"].as_u64().unwrap()
}

/// Posts `parts` as one form and returns the list answer's entries, after
/// checking that each part went to `name`'s batchers as an item of its own.
async fn each_an_item(s: &Running, name: &str, path: &str, parts: &[FormPart<'_>]) -> Vec<Value> {
    let before = items(s, name).await;
    let list = entries(&s.post_form(path, parts).await, parts.len());
    assert_eq!(items(s, name).await - before, parts.len() as u64);
    list
}

/// Sends images to `name`'s `route` in every form: raw, multipart (one
/// file, a `files` list of one, several, mixed with bad parts) and base64
/// JSON, checking each answer by `key` (what tells two images' answers
/// apart) and each limit. Returns the two test images' keys.
async fn images_in_every_form(name: &str, route: &str, key: fn(&Value) -> Value) -> (Value, Value) {
    let s = start(&models_config(&[name], LIMITS)).await;
    let path = &format!("/v1/models/{name}/{route}");
    let (a, b) = (reference_jpeg(), other_jpeg());
    let want_a = key(&ok(&s.post(path, a.clone()).await));
    let want_b = key(&ok(&s.post(path, b.clone()).await));
    assert_ne!(want_a, want_b, "the two test images must be told apart");

    // One multipart file (any field name): one answer, as a raw body.
    for field in ["file", "image"] {
        let r = s.post_form(path, &[(field, Some("a.jpg"), &a)]).await;
        assert_eq!(key(&ok(&r)), want_a, "{field}");
    }
    // An empty field beside it (a browser's unused input) is no part.
    let r = s
        .post_form(path, &[("file", Some("a.jpg"), &a), ("files", None, b"")])
        .await;
    assert_eq!(key(&ok(&r)), want_a);
    // A `files` field is a list even for one.
    let r = s.post_form(path, &[("files", Some("b.jpg"), &b)]).await;
    assert_eq!(key(&entries(&r, 1)[0]), want_b);

    // Several files: a list in the order sent, each part its own item.
    let list = each_an_item(
        &s,
        name,
        path,
        &[
            ("files", Some("b.jpg"), &b),
            ("a", Some("a.jpg"), &a),
            ("b", Some("b.jpg"), &b),
        ],
    )
    .await;
    let got: Vec<_> = list.iter().map(key).collect();
    assert_eq!(got, [want_b.clone(), want_a.clone(), want_b.clone()]);

    // Mixed: each bad part gets its own error entry, the others their
    // answers, none lost.
    let r = s
        .post_form(
            path,
            &[
                ("files", Some("a.jpg"), &a),
                ("files", Some("notes.txt"), b"not an image"),
                ("files", Some("huge.jpg"), &oversized()),
                ("files", Some("wide.png"), &too_many_pixels()),
                ("files", Some("cut.jpg"), &a[..a.len() / 2]),
                ("files", Some("b.jpg"), &b),
            ],
        )
        .await;
    let list = entries(&r, 6);
    assert_eq!(key(&list[0]), want_a);
    error_entry(&list[1], 422, "not an image");
    error_entry(&list[2], 413, "server.uploads.max_part_bytes");
    error_entry(&list[3], 413, "server.uploads.max_pixels");
    error_entry(&list[4], 422, "truncated JPEG");
    assert_eq!(key(&list[5]), want_b);

    // One bad part alone is the answer's status.
    let r = s
        .post_form(path, &[("file", Some("x"), b"not an image")])
        .await;
    error_reply(&r, StatusCode::UNPROCESSABLE_ENTITY, "not an image");
    let r = s
        .post_form(path, &[("file", Some("x"), &oversized())])
        .await;
    error_reply(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "server.uploads.max_part_bytes",
    );
    // More parts than max_parts: the whole request, before any decoding.
    let before = items(&s, name).await;
    let seven: Vec<_> = (0..7).map(|_| ("files", Some("a.jpg"), &a[..])).collect();
    let r = s.post_form(path, &seven).await;
    error_reply(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "server.uploads.max_parts",
    );
    assert_eq!(items(&s, name).await, before, "nothing was run");
    // A form with only an empty field has no image.
    let r = s.post_form(path, &[("file", None, b"")]).await;
    error_reply(&r, StatusCode::BAD_REQUEST, "no non-empty part");

    // JSON base64 images: a list, a bad one failing alone.
    let body = serde_json::json!({
        "images": [base64(&b), "%%%", base64(&oversized()), base64(&a)]
    });
    let list = entries(&s.post(path, body.to_string()).await, 4);
    assert_eq!(key(&list[0]), want_b);
    error_entry(&list[1], 400, "base64");
    error_entry(&list[2], 413, "server.uploads.max_part_bytes");
    assert_eq!(key(&list[3]), want_a);
    let body = serde_json::json!({ "images": vec![base64(b"x"); 7] });
    let r = s.post(path, body.to_string()).await;
    error_reply(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "server.uploads.max_parts",
    );
    let r = s.post(path, r#"{"images": "x"}"#).await;
    error_reply(&r, StatusCode::BAD_REQUEST, "{\"images\"");

    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
    (want_a, want_b)
}

/// A classify answer's labels, best first; its scores checked to be in
/// f32's short form, as embeddings are (an f32 widened to f64 would print
/// as `0.8864659667015076`, not `0.88646597`).
/// A classify answer's labels and its top score to two decimals, after
/// checking the scores. The demo's ResNet-50 has random weights (see
/// `models/resnet50/1/model.json`), so its top five barely depend on the
/// picture: the two test images share their first four labels, and the top
/// score (0.89 and 0.87) is what tells them apart.
fn labels(answer: &Value) -> Value {
    let classes = answer["classes"]
        .as_array()
        .unwrap_or_else(|| panic!("not a classify answer: {answer}"));
    assert_eq!(classes.len(), 5, "{answer}");
    for c in classes {
        let score = c["score"].as_f64().unwrap();
        assert!(score > 0.0 && score <= 1.0, "{c}");
        assert_eq!(score.to_string(), (score as f32).to_string(), "{c}");
    }
    let top = classes[0]["score"].as_f64().unwrap();
    let mut key: Vec<Value> = classes.iter().map(|c| c["label"].clone()).collect();
    key.push(serde_json::json!((top * 100.0).round() / 100.0));
    Value::Array(key)
}

/// A detect answer's image size, after checking its boxes lie inside.
fn size(answer: &Value) -> Value {
    let (w, h) = (answer["width"].as_f64(), answer["height"].as_f64());
    let (Some(w), Some(h)) = (w, h) else {
        panic!("not a detect answer: {answer}")
    };
    for d in answer["detections"].as_array().unwrap() {
        let b: Vec<f64> = (0..4).map(|i| d["bbox"][i].as_f64().unwrap()).collect();
        assert!(b[0] >= 0.0 && b[1] >= 0.0 && b[2] <= w && b[3] <= h, "{d}");
    }
    serde_json::json!([w, h])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn classify_takes_raw_multipart_and_base64_images() {
    let (a, b) = images_in_every_form("resnet50", "classify", labels).await;
    assert_eq!(a.as_array().unwrap().len(), 6);
    assert_eq!(b.as_array().unwrap().len(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn detect_takes_raw_multipart_and_base64_images() {
    let sizes = images_in_every_form("yolov8n", "detect", size).await;
    assert_eq!(
        sizes,
        (
            serde_json::json!([640.0, 480.0]),
            serde_json::json!([320.0, 200.0])
        )
    );
}

fn cosine(a: &Value, b: &Value) -> f64 {
    let v = |x: &Value| -> Vec<f64> {
        x.as_array()
            .unwrap_or_else(|| panic!("not a vector: {x}"))
            .iter()
            .map(|f| f.as_f64().unwrap())
            .collect()
    };
    let (a, b) = (v(a), v(b));
    let dot: f64 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    let n = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
    dot / (n(&a) * n(&b))
}

/// The one embedding of an `embed` answer to one text.
fn embedding(answer: &Value) -> &Value {
    let all = answer["embeddings"]
        .as_array()
        .unwrap_or_else(|| panic!("not an embed answer: {answer}"));
    assert_eq!(all.len(), 1, "{answer}");
    &all[0]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn embed_takes_json_texts_and_multipart_text_parts() {
    let s = start(&models_config(&["minilm"], LIMITS)).await;
    let path = "/v1/models/minilm/embed";
    let (t1, t2) = (
        "A cat sits on the mat.",
        "Quarterly revenue grew by four percent.",
    );

    // JSON texts, as before: one vector per text.
    let r = s.post(path, serde_json::json!([t1, t2]).to_string()).await;
    let want = ok(&r)["embeddings"].as_array().unwrap().clone();
    assert_eq!(want.len(), 2);
    assert!(
        cosine(&want[0], &want[1]) < 0.9,
        "the texts must embed apart"
    );
    let same = |got: &Value, want: &Value| {
        let c = cosine(got, want);
        assert!(c >= 0.999, "cosine {c}");
    };

    // One text field, or one text file: one answer.
    let r = s.post_form(path, &[("text", None, t1.as_bytes())]).await;
    same(embedding(&ok(&r)), &want[0]);
    let r = s
        .post_form(path, &[("file", Some("t.txt"), t2.as_bytes())])
        .await;
    same(embedding(&ok(&r)), &want[1]);
    let r = s
        .post_form(path, &[("files", Some("t.txt"), t1.as_bytes())])
        .await;
    same(embedding(&entries(&r, 1)[0]), &want[0]);

    // Several: a list in order, each text its own item.
    let list = each_an_item(
        &s,
        "minilm",
        path,
        &[
            ("texts", None, t2.as_bytes()),
            ("texts", None, t1.as_bytes()),
            ("texts", None, t2.as_bytes()),
        ],
    )
    .await;
    same(embedding(&list[0]), &want[1]);
    same(embedding(&list[1]), &want[0]);
    same(embedding(&list[2]), &want[1]);

    // Mixed: bad parts answered on their own.
    let r = s
        .post_form(
            path,
            &[
                ("texts", None, t1.as_bytes()),
                ("texts", Some("bin"), b"\xff\xfe\x00not utf-8"),
                ("texts", Some("big.txt"), &oversized()),
                ("texts", None, t2.as_bytes()),
            ],
        )
        .await;
    let list = entries(&r, 4);
    same(embedding(&list[0]), &want[0]);
    error_entry(&list[1], 400, "UTF-8");
    error_entry(&list[2], 413, "server.uploads.max_part_bytes");
    same(embedding(&list[3]), &want[1]);

    let seven: Vec<_> = (0..7).map(|_| ("texts", None, t1.as_bytes())).collect();
    let r = s.post_form(path, &seven).await;
    error_reply(
        &r,
        StatusCode::PAYLOAD_TOO_LARGE,
        "server.uploads.max_parts",
    );

    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infer_refuses_multipart_and_limits_are_checked_at_load() {
    let s = start(TEST_CONFIG).await;
    let r = s
        .post_form("/v1/models/identity/infer", &[("file", Some("a"), b"1")])
        .await;
    error_reply(&r, StatusCode::UNSUPPORTED_MEDIA_TYPE, "JSON tensors");
    s.shutdown().await;

    for bad in [
        "max_parts = 0",
        "max_part_bytes = 0",
        "max_pixels = -1",
        "max_files = 2",
    ] {
        let config = format!("{TEST_CONFIG}\n[server.uploads]\n{bad}\n");
        assert!(
            example_multi_model::Config::parse(&config).is_err(),
            "{bad} was accepted"
        );
    }
}
