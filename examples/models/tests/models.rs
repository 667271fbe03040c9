//! The runtime against the exported models and the Python reference outputs
//! (`scripts/export_models.py` writes both into `models/`).

use std::path::PathBuf;
use std::sync::OnceLock;

use example_models::image::{self, ImageLimits};
use example_models::text::TextEncoder;
use example_models::{
    post, Device, InputErrorKind, LoadOptions, Manifest, Model, ModelErrorKind, ModelKind,
    Postprocess,
};
use example_tensor::{NamedTensor, Tensor, TensorData};
use serde_json::Value;

fn models_dir() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models");
    for m in ["resnet50", "yolov8n", "minilm"] {
        assert!(
            dir.join(m).join("1").join("model.json").exists(),
            "{} is missing the exported model {m}: run scripts/setup.sh (it creates .venv and runs scripts/export_models.py)",
            dir.display()
        );
    }
    dir
}

fn model_dir(name: &str) -> PathBuf {
    models_dir().join(name).join("1")
}

fn reference(name: &str) -> Value {
    let text = std::fs::read_to_string(model_dir(name).join("reference.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn load(name: &str, max_batch_size: usize) -> Model {
    Model::load(
        &model_dir(name),
        &LoadOptions {
            device: Device::Cpu,
            intra_op_threads: 2,
            max_batch_size,
            half: false,
            queue_capacity: 2,
            executor: None,
            profile: false,
        },
    )
    .unwrap()
}

fn resnet() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load("resnet50", 2))
}

fn yolo() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load("yolov8n", 1))
}

fn minilm() -> &'static Model {
    static M: OnceLock<Model> = OnceLock::new();
    M.get_or_init(|| load("minilm", 4))
}

fn fp32(t: &NamedTensor) -> &[f32] {
    match &t.tensor.data {
        TensorData::Fp32(v) => v,
        other => panic!("expected FP32, got {}", other.datatype()),
    }
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// The deterministic input the export script also feeds its models.
fn pattern(name: &str, shape: Vec<usize>) -> NamedTensor {
    let n: usize = shape.iter().product();
    let data = (0..n as u64)
        .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
        .collect();
    NamedTensor::new(name, Tensor::new(shape, TensorData::Fp32(data)).unwrap())
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na: f32 = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb: f32 = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb)
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

#[test]
fn exported_manifests_parse() {
    let resnet = Manifest::load(&model_dir("resnet50")).unwrap();
    assert_eq!(resnet.kind, ModelKind::Classify);
    assert_eq!(resnet.inputs[0].shape, vec![-1, 3, 224, 224]);
    assert_eq!(resnet.label_names.len(), 1000);
    assert_eq!(resnet.label_names[0], "tench");
    let yolo = Manifest::load(&model_dir("yolov8n")).unwrap();
    assert_eq!(yolo.kind, ModelKind::Detect);
    assert_eq!(yolo.label_names.len(), 80);
    assert_eq!(yolo.label_names[0], "person");
    assert_eq!(yolo.outputs[0].shape, vec![-1, 84, 8400]);
    let minilm = Manifest::load(&model_dir("minilm")).unwrap();
    assert_eq!(minilm.kind, ModelKind::Embed);
    assert_eq!(minilm.inputs.len(), 2);
    assert_eq!(minilm.inputs[1].shape, vec![-1, -1]);
    assert!(minilm.label_names.is_empty());
    assert!(matches!(
        minilm.postprocess,
        Postprocess::Embedding {
            pooled_in_model: true,
            ..
        }
    ));
    assert_eq!(
        minilm
            .exported_with
            .get("torch")
            .map(String::as_str)
            .map(|v| &v[..6]),
        Some("2.11.0")
    );
}

const GOOD: &str = r#"{"name": "m", "version": "1", "kind": "classify", "file": "model.pt",
  "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
  "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}"#;

#[test]
fn bad_manifests_are_refused_with_a_reason() {
    assert!(Manifest::parse(GOOD).is_ok());
    let cases = [
        (GOOD.replace("\"FP32\", \"shape\": [-1, 4]", "\"FLOAT\", \"shape\": [-1, 4]"), "unknown datatype"),
        (GOOD.replace("[-1, 4]", "[4, 4]"), "batch dimension"),
        (GOOD.replace("[-1, 4]", "[-1, 0]"), "positive"),
        (GOOD.replace("\"name\": \"y\"", "\"name\": \"x\"").replace("\"outputs\"", "\"inputs2\""), "outputs"),
        (GOOD.replace("\"kind\": \"classify\"", "\"kind\": \"translate\""), "unknown variant"),
        (GOOD.replace("\"file\": \"model.pt\",", ""), "missing field `file`"),
        (
            GOOD.replace(
                "\"file\"",
                "\"preprocess\": {\"type\": \"text\", \"tokenizer\": \"t.json\", \"max_tokens\": 8}, \"file\"",
            ),
            "does not fit",
        ),
        (GOOD.replace("\"file\"", "\"postprocess\": {\"type\": \"top_k\", \"k\": 0}, \"file\""), "k must be positive"),
        ("{".to_string(), "EOF"),
    ];
    for (json, want) in cases {
        let err = Manifest::parse(&json).unwrap_err();
        assert!(
            err.contains(want),
            "{json}: error {err:?} does not mention {want:?}"
        );
    }
    let dup = GOOD.replace(
        "[{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 4]}]",
        "[{\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 4]}, {\"name\": \"x\", \"datatype\": \"FP32\", \"shape\": [-1, 4]}]",
    );
    assert!(Manifest::parse(&dup).unwrap_err().contains("duplicate"));
}

#[test]
fn missing_model_directory_is_a_manifest_error() {
    let err = Model::load(
        &models_dir().join("no-such-model/1"),
        &LoadOptions::default(),
    )
    .unwrap_err();
    assert_eq!(err.kind(), ModelErrorKind::Manifest);
    assert!(err.to_string().contains("model.json"), "{err}");
}

#[test]
fn invalid_load_options_are_refused() {
    let opts = LoadOptions {
        intra_op_threads: 0,
        ..LoadOptions::default()
    };
    let err = Model::load(&model_dir("resnet50"), &opts).unwrap_err();
    assert_eq!(err.kind(), ModelErrorKind::Options);
}

/// With `profile`, loading times a pass at 1, 2, 4, … and the max (a max
/// that is not a power of two included); without, it measures nothing.
#[test]
fn a_profiled_load_times_each_power_of_two_and_the_max() {
    let opts = |profile| LoadOptions {
        intra_op_threads: 2,
        max_batch_size: 6,
        profile,
        ..LoadOptions::default()
    };
    let m = Model::load(&model_dir("minilm"), &opts(true)).unwrap();
    let sizes: Vec<usize> = m.batch_profile().iter().map(|(n, _)| *n).collect();
    assert_eq!(sizes, [1, 2, 4, 6]);
    assert!(m.batch_profile().iter().all(|(_, took)| !took.is_zero()));
    // A batch of 6 needs more time than a batch of 1 on any machine.
    assert!(
        m.batch_profile()[3].1 > m.batch_profile()[0].1,
        "{:?}",
        m.batch_profile()
    );
    let m = Model::load(&model_dir("minilm"), &opts(false)).unwrap();
    assert!(m.batch_profile().is_empty());
}

#[test]
fn minilm_embeddings_match_sentence_transformers() {
    let model = minilm();
    let reference = reference("minilm");
    let encoder = TextEncoder::from_manifest(&model_dir("minilm"), model.manifest()).unwrap();
    let sentences: Vec<String> = reference["sentences"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap().to_owned())
        .collect();
    let want: Vec<Vec<f32>> = reference["embeddings"]
        .as_array()
        .unwrap()
        .iter()
        .map(floats)
        .collect();
    let items: Vec<Vec<NamedTensor>> = sentences
        .iter()
        .map(|s| encoder.encode(s).unwrap())
        .collect();
    // Same token ids as the Python tokenizer.
    for (i, item) in items.iter().enumerate() {
        let ids: Vec<i64> = reference["input_ids"][i]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_i64().unwrap())
            .collect();
        assert_eq!(
            item[0].tensor.data,
            TensorData::Int64(ids),
            "token ids of sentence {i}"
        );
    }
    // One at a time, then all together (mixed lengths, padded).
    for (i, item) in items.iter().enumerate() {
        let out = model.forward_blocking(vec![item.clone()]).unwrap();
        let got = post::embedding(&out[0][0].tensor, None).unwrap();
        let c = cosine(&got, &want[i]);
        assert!(c >= 0.999, "sentence {i} alone: cosine {c}");
    }
    let out = model.forward_blocking(items.clone()).unwrap();
    assert_eq!(out.len(), items.len());
    for (i, item_out) in out.iter().enumerate() {
        assert_eq!(item_out[0].name, "embedding");
        assert_eq!(item_out[0].tensor.shape, vec![1, 384]);
        let got = post::embedding(&item_out[0].tensor, None).unwrap();
        let c = cosine(&got, &want[i]);
        assert!(c >= 0.999, "sentence {i} in a batch: cosine {c}");
    }
}

#[test]
fn long_text_is_truncated_and_still_encodes() {
    let model = minilm();
    let encoder = TextEncoder::from_manifest(&model_dir("minilm"), model.manifest()).unwrap();
    let text = "convoy ".repeat(100_000 / 7 + 1);
    assert!(text.len() >= 100_000);
    assert_eq!(encoder.encoded_len(&text).unwrap(), 256);
    let item = encoder.encode(&text).unwrap();
    assert_eq!(item[0].tensor.shape, vec![1, 256]);
    let out = model.forward_blocking(vec![item]).unwrap();
    let v = post::embedding(&out[0][0].tensor, None).unwrap();
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_eq!(encoder.encoded_len("").unwrap(), 2, "[CLS] [SEP]");
}

/// A request's texts tokenized in one step give exactly what tokenizing
/// each alone gives: same ids, masks and shapes, in order.
#[test]
fn texts_encoded_together_match_texts_encoded_alone() {
    let model = minilm();
    let encoder = TextEncoder::from_manifest(&model_dir("minilm"), model.manifest()).unwrap();
    let long = "convoy ".repeat(2000);
    let texts = [
        "A man is playing a guitar.",
        "",
        long.as_str(),
        "Ünïcödé — 漢字 and emoji 🚀 mixed in",
        "fn main() { println!(\"hi\"); }",
    ];
    let together = encoder.encode_many(&texts);
    assert_eq!(together.len(), texts.len());
    for (text, got) in texts.iter().zip(together) {
        let got = got.unwrap();
        let alone = encoder.encode(text).unwrap();
        assert_eq!(got.len(), alone.len());
        for (a, b) in got.iter().zip(&alone) {
            assert_eq!(
                (&a.name, &a.tensor.shape),
                (&b.name, &b.tensor.shape),
                "{text:?}"
            );
            assert_eq!(a.tensor.data, b.tensor.data, "{text:?}");
        }
    }
    assert!(encoder.encode_many::<&str>(&[]).is_empty());
}

#[test]
fn resnet_logits_match_python_on_the_same_input() {
    let model = resnet();
    let reference = reference("resnet50");
    let out = model
        .forward_blocking(vec![vec![pattern("input", vec![2, 3, 224, 224])]])
        .unwrap();
    let got = fp32(&out[0][0]);
    let want: Vec<f32> = reference["pattern_logits"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(floats)
        .collect();
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let diff = max_abs_diff(got, &want);
    assert!(
        diff <= 1e-3 * scale + 1e-4,
        "max abs diff {diff} (scale {scale})"
    );
}

#[test]
fn resnet_reference_image_top5_matches_python() {
    let model = resnet();
    let reference = reference("resnet50");
    let bytes = std::fs::read(model_dir("resnet50").join("reference.png")).unwrap();
    let img = image::decode(&bytes, &ImageLimits::default()).unwrap();
    let input = image::classify_input(&img, model.manifest());
    assert_eq!(input.tensor.shape, vec![1, 3, 224, 224]);
    let out = model.forward_blocking(vec![vec![input]]).unwrap();
    let got = fp32(&out[0][0]);
    let want = floats(&reference["image_logits"]);
    let scale = want.iter().map(|v| v.abs()).fold(0.0, f32::max);
    let diff = max_abs_diff(got, &want);
    // The resize differs from PIL's in rounding only.
    assert!(diff <= 0.02 * scale, "max abs diff {diff} (scale {scale})");
    let top5 = post::top_k(got, 5, &model.manifest().label_names);
    let want_top5: Vec<usize> = reference["image_top5"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as usize)
        .collect();
    assert_eq!(top5.iter().map(|c| c.index).collect::<Vec<_>>(), want_top5);
    for c in &top5 {
        assert!(c.score > 0.0 && c.score <= 1.0);
        assert_eq!(c.label, model.manifest().label_names[c.index]);
    }
}

#[test]
fn yolo_raw_output_matches_python_and_boxes_lie_inside_the_image() {
    let model = yolo();
    let reference = reference("yolov8n");
    let out = model
        .forward_blocking(vec![vec![pattern("images", vec![1, 3, 640, 640])]])
        .unwrap();
    let got = fp32(&out[0][0]);
    let want = &reference["pattern_output"];
    assert_eq!(out[0][0].tensor.shape, vec![1, 84, 8400]);
    let sampled: Vec<f32> = got.iter().step_by(997).copied().collect();
    let want_sampled = floats(&want["strided_997"]);
    let scale = want["max"]
        .as_f64()
        .unwrap()
        .abs()
        .max(want["min"].as_f64().unwrap().abs()) as f32;
    let diff = max_abs_diff(&sampled, &want_sampled);
    assert!(
        diff <= 1e-3 * scale + 1e-3,
        "max abs diff {diff} (scale {scale})"
    );

    let bytes = std::fs::read(model_dir("yolov8n").join("reference.png")).unwrap();
    let img = image::decode(&bytes, &ImageLimits::default()).unwrap();
    let (input, lb) = image::letterbox(&img, model.manifest());
    assert_eq!((lb.width, lb.height), (640, 480));
    assert_eq!((lb.pad_x, lb.pad_y, lb.scale), (0.0, 80.0, 1.0));
    let out = model.forward_blocking(vec![vec![input]]).unwrap();
    let sum: f64 = fp32(&out[0][0]).iter().map(|&v| f64::from(v)).sum();
    let want_sum = reference["image_output"]["sum"].as_f64().unwrap();
    assert!(
        (sum - want_sum).abs() <= 1e-3 * want_sum.abs() + 1.0,
        "sum {sum} vs {want_sum}"
    );
    let dets = post::detections(
        &out[0][0].tensor,
        &lb,
        0.25,
        0.45,
        300,
        &model.manifest().label_names,
    )
    .unwrap();
    assert!(dets.len() <= 300);
    for d in &dets {
        let [x1, y1, x2, y2] = d.bbox;
        assert!(0.0 <= x1 && x1 <= x2 && x2 <= 640.0, "{d:?}");
        assert!(0.0 <= y1 && y1 <= y2 && y2 <= 480.0, "{d:?}");
        assert!(d.score > 0.25 && d.class < 80);
        assert_eq!(d.label, model.manifest().label_names[d.class]);
    }
    assert!(dets.windows(2).all(|w| w[0].score >= w[1].score));
}

/// A PNG that claims `width` x `height` pixels but carries almost no data:
/// the signature, IHDR, a tiny IDAT (an empty zlib stream) and IEND.
fn png_header(width: u32, height: u32) -> Vec<u8> {
    fn crc32(bytes: &[u8]) -> u32 {
        let mut crc = 0xffff_ffffu32;
        for &b in bytes {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ 0xedb8_8320
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend_from_slice(&width.to_be_bytes());
    ihdr.extend_from_slice(&height.to_be_bytes());
    ihdr.extend_from_slice(&[8, 2, 0, 0, 0]); // 8-bit RGB
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    for (kind, data) in [
        (&b"IHDR"[..], &ihdr[4..]),
        (b"IDAT", &[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]),
        (b"IEND", &[]),
    ] {
        let mut chunk = kind.to_vec();
        chunk.extend_from_slice(data);
        png.extend_from_slice(&(data.len() as u32).to_be_bytes());
        png.extend_from_slice(&chunk);
        png.extend_from_slice(&crc32(&chunk).to_be_bytes());
    }
    png
}

#[test]
fn bad_images_are_typed_input_errors() {
    fn decode_err(bytes: &[u8], limits: &ImageLimits) -> Result<(), example_models::InputError> {
        example_models::image::decode(bytes, limits).map(|img| assert!(img.width() > 0))
    }
    let limits = ImageLimits::default();
    let err = decode_err(b"this is not an image at all", &limits).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::Image);

    // A JPEG cut in half.
    let img = image::decode(
        &std::fs::read(model_dir("resnet50").join("reference.png")).unwrap(),
        &limits,
    )
    .unwrap();
    let mut jpeg = Vec::new();
    img.write_to(
        &mut std::io::Cursor::new(&mut jpeg),
        ::image::ImageFormat::Jpeg,
    )
    .unwrap();
    assert!(decode_err(&jpeg, &limits).is_ok());
    let err = decode_err(&jpeg[..jpeg.len() / 2], &limits).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::Image, "{err}");
    let err = decode_err(&jpeg[..20], &limits).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::Image, "{err}");

    // A decompression bomb: 40000 x 40000 claimed by a file of 65 bytes.
    let bomb = png_header(40_000, 40_000);
    assert!(bomb.len() < 100);
    let err = decode_err(&bomb, &limits).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::ImageTooLarge, "{err}");
    assert!(err.message().contains("40000x40000"), "{err}");
    // Within the limits the same file is merely missing its pixels.
    let err = decode_err(&png_header(64, 64), &limits).unwrap_err();
    assert_eq!(err.kind(), InputErrorKind::Image, "{err}");
    // Width and height within their limits but too many pixels.
    let tight = ImageLimits {
        max_pixels: 1000,
        ..limits
    };
    assert_eq!(
        decode_err(&png_header(100, 100), &tight)
            .unwrap_err()
            .kind(),
        InputErrorKind::ImageTooLarge
    );
}

#[test]
fn wrong_inputs_are_errors_and_the_model_keeps_serving() {
    let model = resnet();
    let bad = [
        vec![pattern("input", vec![1, 3, 224, 225])],
        vec![pattern("input", vec![1, 3, 224])],
        vec![pattern("picture", vec![1, 3, 224, 224])],
        vec![],
        vec![
            pattern("input", vec![1, 3, 224, 224]),
            pattern("extra", vec![1]),
        ],
        vec![NamedTensor::new(
            "input",
            Tensor::new(
                vec![1, 3, 224, 224],
                TensorData::Int64(vec![0; 3 * 224 * 224]),
            )
            .unwrap(),
        )],
    ];
    for item in bad {
        let desc = format!(
            "{:?}",
            item.iter()
                .map(|t| (&t.name, &t.tensor.shape))
                .collect::<Vec<_>>()
        );
        let err = model.forward_blocking(vec![item]).unwrap_err();
        assert_eq!(err.kind(), ModelErrorKind::Input, "{desc}: {err}");
        assert!(err.input_error().is_some());
    }
    let text = minilm();
    let ids = |n: usize| {
        NamedTensor::new(
            "input_ids",
            Tensor::new(vec![1, n], TensorData::Int64(vec![101; n])).unwrap(),
        )
    };
    let mask = |n: usize| {
        NamedTensor::new(
            "attention_mask",
            Tensor::new(vec![1, n], TensorData::Int64(vec![1; n])).unwrap(),
        )
    };
    let rows2 = NamedTensor::new(
        "attention_mask",
        Tensor::new(vec![2, 3], TensorData::Int64(vec![1; 6])).unwrap(),
    );
    assert_eq!(
        text.forward_blocking(vec![vec![ids(3), rows2]])
            .unwrap_err()
            .kind(),
        ModelErrorKind::Input
    );
    // Token ids out of the vocabulary reach libtorch, which refuses them.
    let oov = NamedTensor::new(
        "input_ids",
        Tensor::new(vec![1, 2], TensorData::Int64(vec![1 << 40, 5])).unwrap(),
    );
    assert_eq!(
        text.forward_blocking(vec![vec![oov, mask(2)]])
            .unwrap_err()
            .kind(),
        ModelErrorKind::Forward
    );
    // Still serving.
    assert_eq!(
        text.forward_blocking(vec![vec![ids(3), mask(3)]])
            .unwrap()
            .len(),
        1
    );
    let out = model
        .forward_blocking(vec![vec![pattern("input", vec![1, 3, 224, 224])]])
        .unwrap();
    assert_eq!(out[0][0].tensor.shape, vec![1, 1000]);
}

#[tokio::test]
async fn async_forward_splits_rows_back_per_item() {
    let model = minilm().clone();
    let encoder = TextEncoder::from_manifest(&model_dir("minilm"), model.manifest()).unwrap();
    let short = encoder.encode("short").unwrap();
    let long = encoder
        .encode("a much longer text than the other one, with many more tokens")
        .unwrap();
    let out = model
        .forward(vec![short.clone(), long.clone(), short.clone()])
        .await
        .unwrap();
    assert_eq!(out.len(), 3);
    assert_eq!(fp32(&out[0][0]), fp32(&out[2][0]));
    let alone = model.forward(vec![long]).await.unwrap();
    let c = cosine(fp32(&out[1][0]), fp32(&alone[0][0]));
    assert!(c > 0.9999, "padding changed the embedding: cosine {c}");
    assert!(model.forward(Vec::new()).await.unwrap().is_empty());
}

/// The letterbox puts every pixel of the scaled image at its place in each
/// channel's plane, and the manifest's grey everywhere else.
#[test]
fn letterbox_places_each_pixel_and_pads_with_grey() {
    let manifest = example_models::Manifest::load(&model_dir("yolov8n")).unwrap();
    // 640 × 320: no scaling at size 640, 160 grey rows above and below.
    let img = ::image::RgbImage::from_fn(640, 320, |x, y| {
        ::image::Rgb([
            (x % 256) as u8,
            (y % 256) as u8,
            if y < 160 { 255 } else { 0 },
        ])
    });
    let (input, lb) = image::letterbox(&::image::DynamicImage::ImageRgb8(img), &manifest);
    assert_eq!((lb.pad_x, lb.pad_y, lb.scale), (0.0, 160.0, 1.0));
    let data = fp32(&input);
    let plane = 640 * 640;
    let at = |c: usize, y: usize, x: usize| data[c * plane + y * 640 + x];
    let grey = 114.0 / 255.0;
    for (y, x) in [(0, 0), (159, 639), (480, 0), (639, 639)] {
        for c in 0..3 {
            assert_eq!(at(c, y, x), grey, "pad at ({y}, {x}) channel {c}");
        }
    }
    for (y, x) in [(160, 0), (160, 639), (319, 300), (320, 5), (479, 639)] {
        let src_y = y - 160;
        let want = [
            (x % 256) as f32 / 255.0,
            (src_y % 256) as f32 / 255.0,
            if src_y < 160 { 1.0 } else { 0.0 },
        ];
        for (c, w) in want.iter().enumerate() {
            assert_eq!(at(c, y, x), *w, "pixel ({y}, {x}) channel {c}");
        }
    }
}
