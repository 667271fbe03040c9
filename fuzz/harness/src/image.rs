//! The server's image path (`example_models::image`): arbitrary bytes as an
//! uploaded image, through the bounded decoder, then the classification
//! transform (resize, center crop, normalize) and the detection letterbox.
//! Checked:
//! - no panic; the bytes are an image or a typed [`InputError`] (kind
//!   `Image` or `ImageTooLarge`) with a message;
//! - an image whose header declares more than [`LIMITS`] is refused with
//!   `ImageTooLarge` (before any pixel is decoded: `tests/alloc.rs` bounds
//!   what such an input may allocate);
//! - a decoded image has the header's dimensions, within the limits;
//! - the classification input is `[1, 3, crop, crop]` FP32 and the letterbox
//!   input `[1, 3, size, size]` FP32 in [0, 1], every value finite, named
//!   as the manifest's first input; the letterbox placement maps the image
//!   inside the square.

use std::io::Cursor;

use example_models::image::{self, ImageLimits};
use example_models::{InputError, InputErrorKind, Manifest};
use example_tensor::{NamedTensor, TensorData};

/// The limits the decoder runs with (smaller than the server's default so
/// that a fuzzer reaches them).
pub const LIMITS: ImageLimits = ImageLimits {
    max_width: 2048,
    max_height: 2048,
    max_pixels: 1 << 20,
};

/// The classification crop and the letterbox side.
const CROP: usize = 24;
const SIZE: usize = 40;

fn manifests() -> &'static (Manifest, Manifest) {
    static M: std::sync::OnceLock<(Manifest, Manifest)> = std::sync::OnceLock::new();
    M.get_or_init(|| {
        let classify = Manifest::parse(&format!(
            r#"{{"name": "classify", "version": "1", "kind": "classify", "file": "model.pt",
                "inputs": [{{"name": "input", "datatype": "FP32", "shape": [-1, 3, {CROP}, {CROP}]}}],
                "outputs": [{{"name": "logits", "datatype": "FP32", "shape": [-1, 10]}}],
                "preprocess": {{"type": "image_classify", "resize": 28, "crop": {CROP},
                    "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}},
                "postprocess": {{"type": "top_k", "k": 5}}}}"#
        ))
        .expect("a valid classify manifest");
        let detect = Manifest::parse(&format!(
            r#"{{"name": "detect", "version": "1", "kind": "detect", "file": "model.pt",
                "inputs": [{{"name": "images", "datatype": "FP32", "shape": [-1, 3, {SIZE}, {SIZE}]}}],
                "outputs": [{{"name": "output0", "datatype": "FP32", "shape": [-1, 84, 8400]}}],
                "preprocess": {{"type": "letterbox", "size": {SIZE}, "pad_value": 114}},
                "postprocess": {{"type": "yolov8", "conf": 0.25, "iou": 0.45, "max_detections": 300}}}}"#
        ))
        .expect("a valid detect manifest");
        (classify, detect)
    })
}

/// The dimensions the image's header declares, read independently of the
/// server's decoder.
fn header_dimensions(data: &[u8]) -> Option<(u32, u32)> {
    ::image::ImageReader::new(Cursor::new(data))
        .with_guessed_format()
        .ok()?
        .into_dimensions()
        .ok()
}

fn too_large((w, h): (u32, u32)) -> bool {
    w > LIMITS.max_width || h > LIMITS.max_height || u64::from(w) * u64::from(h) > LIMITS.max_pixels
}

fn check_tensor(t: &NamedTensor, name: &str, side: usize, unit: bool) {
    assert_eq!(t.name, name);
    assert_eq!(t.tensor.shape, vec![1, 3, side, side]);
    let TensorData::Fp32(v) = &t.tensor.data else {
        panic!("{name}: not FP32");
    };
    assert_eq!(v.len(), 3 * side * side);
    for &x in v {
        assert!(x.is_finite(), "{name}: a value is {x}");
        if unit {
            assert!((0.0..=1.0).contains(&x), "{name}: {x} is outside [0, 1]");
        }
    }
}

/// Runs one input. Panics when a promise breaks.
pub fn run(data: &[u8]) {
    let (classify, detect) = manifests();
    let header = header_dimensions(data);
    let img = match image::decode(data, &LIMITS) {
        Ok(img) => img,
        Err(e) => {
            check_error(&e, header);
            return;
        }
    };
    let dims = (img.width(), img.height());
    assert!(
        !too_large(dims),
        "decoded an image of {dims:?} over the limits"
    );
    if let Some(h) = header {
        assert_eq!(dims, h, "the decoded image is not the header's size");
    }
    check_tensor(&image::classify_input(&img, classify), "input", CROP, false);
    let (tensor, placed) = image::letterbox(&img, detect);
    check_tensor(&tensor, "images", SIZE, true);
    assert_eq!(
        (placed.width, placed.height),
        (dims.0.max(1), dims.1.max(1))
    );
    assert!(placed.scale.is_finite() && placed.scale > 0.0);
    let side = SIZE as f32;
    let (w, h) = (placed.width as f32, placed.height as f32);
    // The scaled image fits in the square once padded (a pixel of rounding).
    assert!(placed.pad_x >= 0.0 && placed.pad_x + (w * placed.scale).round() <= side + 1.0);
    assert!(placed.pad_y >= 0.0 && placed.pad_y + (h * placed.scale).round() <= side + 1.0);
}

fn check_error(e: &InputError, header: Option<(u32, u32)>) {
    assert!(!e.message().is_empty(), "an empty message");
    match e.kind() {
        InputErrorKind::ImageTooLarge => {
            let h = header.expect("too large, but the header is unreadable");
            assert!(too_large(h), "{h:?} refused as too large: {e}");
        }
        InputErrorKind::Image => {
            if let Some(h) = header {
                assert!(!too_large(h), "{h:?} is too large but refused as {e}");
            }
        }
        other => panic!("an image refused as {other:?}: {e}"),
    }
}
