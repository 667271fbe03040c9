//! Image inputs: bounded decoding and the classification and letterbox
//! transforms.

use std::io::Cursor;

use example_tensor::{NamedTensor, Tensor, TensorData};
use fast_image_resize as fir;
use image::{DynamicImage, ImageFormat, ImageReader, RgbImage};

use crate::error::{InputError, InputErrorKind};
use crate::manifest::{Manifest, Preprocess};

pub use image::DynamicImage as Image;

/// Limits on the images [`decode`] accepts, checked against the header
/// before any pixel is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ImageLimits {
    /// The largest width.
    pub max_width: u32,
    /// The largest height.
    pub max_height: u32,
    /// The most pixels (width × height).
    pub max_pixels: u64,
}

impl Default for ImageLimits {
    /// 8192 × 8192 and 40 megapixels at most.
    fn default() -> Self {
        ImageLimits {
            max_width: 8192,
            max_height: 8192,
            max_pixels: 40_000_000,
        }
    }
}

fn image_error(message: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::Image, message)
}

/// Decodes a JPEG or PNG. The dimensions are read from the header and
/// checked against `limits` first, so a decompression bomb (a small file
/// claiming a huge image) is refused before anything is allocated for it.
pub fn decode(bytes: &[u8], limits: &ImageLimits) -> Result<DynamicImage, InputError> {
    let format = image::guess_format(bytes)
        .map_err(|_| image_error("the body is not an image (expected JPEG or PNG)"))?;
    if !matches!(format, ImageFormat::Jpeg | ImageFormat::Png) {
        return Err(image_error(format!(
            "unsupported image format {format:?} (expected JPEG or PNG)"
        )));
    }
    let (width, height) = ImageReader::with_format(Cursor::new(bytes), format)
        .into_dimensions()
        .map_err(|e| image_error(format!("unreadable {format:?} header: {e}")))?;
    if width > limits.max_width
        || height > limits.max_height
        || u64::from(width) * u64::from(height) > limits.max_pixels
    {
        return Err(InputError::new(
            InputErrorKind::ImageTooLarge,
            format!(
                "image of {width}x{height} pixels exceeds the limit of {}x{} and {} pixels",
                limits.max_width, limits.max_height, limits.max_pixels
            ),
        ));
    }
    if format == ImageFormat::Jpeg && !ends_with_jpeg_eoi(bytes) {
        // The decoder fills a truncated JPEG's missing rows with grey instead
        // of failing; a request cut short is an error, not a grey image.
        return Err(image_error("truncated JPEG: no end-of-image marker"));
    }
    let mut reader = ImageReader::with_format(Cursor::new(bytes), format);
    let mut decode_limits = image::Limits::default();
    decode_limits.max_image_width = Some(limits.max_width);
    decode_limits.max_image_height = Some(limits.max_height);
    // RGBA at 16 bits per channel for the largest accepted image, plus slack.
    decode_limits.max_alloc = Some(limits.max_pixels.saturating_mul(8).saturating_add(1 << 20));
    reader.limits(decode_limits);
    reader
        .decode()
        .map_err(|e| image_error(format!("cannot decode the {format:?} image: {e}")))
}

/// Whether a JPEG ends with its end-of-image marker (FF D9), ignoring the
/// trailing padding some encoders add. Inside entropy-coded data an FF byte
/// is always stuffed (FF 00), so FF D9 at the end is the real marker.
fn ends_with_jpeg_eoi(bytes: &[u8]) -> bool {
    let end = bytes
        .iter()
        .rposition(|b| !matches!(b, 0 | b' ' | b'\r' | b'\n' | b'\t'))
        .map_or(0, |i| i + 1);
    end >= 2 && bytes[end - 2..end] == [0xff, 0xd9]
}

/// `rgb` resized to `nw × nh` by a bilinear convolution whose support widens
/// when it shrinks the image, as PIL's `BILINEAR` (torchvision's `Resize`)
/// does; `fast_image_resize`'s SIMD kernels take a 640×480 photo to
/// ResNet-50's 341×256 in a fraction of `image::imageops::resize`'s time
/// (examples/README.md, "Served against raw").
fn resize_rgb(rgb: RgbImage, nw: u32, nh: u32) -> RgbImage {
    let (w, h) = rgb.dimensions();
    if (w, h) == (nw, nh) {
        return rgb;
    }
    if w == 0 || h == 0 {
        return RgbImage::new(nw, nh);
    }
    let src = fir::images::Image::from_vec_u8(w, h, rgb.into_raw(), fir::PixelType::U8x3)
        .expect("an RGB image's buffer holds its pixels");
    let mut dst = fir::images::Image::new(nw, nh, fir::PixelType::U8x3);
    let options = fir::ResizeOptions::new()
        .resize_alg(fir::ResizeAlg::Convolution(fir::FilterType::Bilinear));
    fir::Resizer::new()
        .resize(&src, &mut dst, &options)
        .expect("both images are non-empty RGB");
    RgbImage::from_raw(nw, nh, dst.into_vec()).expect("the resized buffer holds nw × nh pixels")
}

/// Rounds half to even, as Python's `round` (torchvision's center crop).
fn round_even(x: f64) -> f64 {
    x.round_ties_even()
}

/// The classification input `[1, 3, crop, crop]` for the model's first
/// input, as torchvision's `Resize(resize)`, `CenterCrop(crop)`,
/// `ToTensor()`, `Normalize(mean, std)`.
///
/// # Panics
///
/// If the manifest's preprocessing is not `image_classify` (a manifest of
/// kind `classify` always has it).
pub fn classify_input(img: &DynamicImage, manifest: &Manifest) -> NamedTensor {
    let Preprocess::ImageClassify {
        resize,
        crop,
        mean,
        std,
    } = &manifest.preprocess
    else {
        panic!(
            "classify_input needs an image_classify manifest, got {:?}",
            manifest.preprocess
        )
    };
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let (w, h) = (w.max(1), h.max(1));
    // torchvision: the shorter side becomes `resize`, the longer is truncated.
    let (nw, nh) = if w <= h {
        (
            *resize,
            ((u64::from(*resize) * u64::from(h)) / u64::from(w)) as u32,
        )
    } else {
        (
            ((u64::from(*resize) * u64::from(w)) / u64::from(h)) as u32,
            *resize,
        )
    };
    let resized = resize_rgb(rgb, nw.max(1), nh.max(1));
    let crop = *crop;
    let top = round_even((f64::from(nh) - f64::from(crop)) / 2.0).max(0.0) as u32;
    let left = round_even((f64::from(nw) - f64::from(crop)) / 2.0).max(0.0) as u32;
    let side = crop as usize;
    let mut data = vec![0f32; 3 * side * side];
    for y in 0..crop {
        for x in 0..crop {
            let (sx, sy) = (left + x, top + y);
            let px = if sx < nw && sy < nh {
                resized.get_pixel(sx, sy).0
            } else {
                [0, 0, 0]
            };
            for c in 0..3 {
                let v = f32::from(px[c]) / 255.0;
                data[c * side * side + y as usize * side + x as usize] = (v - mean[c]) / std[c];
            }
        }
    }
    let tensor = Tensor::new(vec![1, 3, side, side], TensorData::Fp32(data))
        .expect("3 × crop × crop elements");
    NamedTensor::new(manifest.inputs[0].name.clone(), tensor)
}

/// How [`letterbox`] placed the image, to map boxes back to its pixels.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Letterbox {
    /// Model pixels per original pixel.
    pub scale: f32,
    /// Left padding in model pixels.
    pub pad_x: f32,
    /// Top padding in model pixels.
    pub pad_y: f32,
    /// The original width.
    pub width: u32,
    /// The original height.
    pub height: u32,
}

/// The detection input `[1, 3, size, size]` (RGB in [0, 1]) for the model's
/// first input, as ultralytics' `LetterBox`: scale to fit keeping the aspect
/// ratio, center, pad with the manifest's grey.
///
/// # Panics
///
/// If the manifest's preprocessing is not `letterbox`.
pub fn letterbox(img: &DynamicImage, manifest: &Manifest) -> (NamedTensor, Letterbox) {
    let Preprocess::Letterbox { size, pad_value } = &manifest.preprocess else {
        panic!(
            "letterbox needs a letterbox manifest, got {:?}",
            manifest.preprocess
        )
    };
    let size = *size;
    let rgb = img.to_rgb8();
    let (w, h) = rgb.dimensions();
    let (w, h) = (w.max(1), h.max(1));
    let r = (f64::from(size) / f64::from(h)).min(f64::from(size) / f64::from(w));
    let nw = (round_even(f64::from(w) * r) as u32).clamp(1, size);
    let nh = (round_even(f64::from(h) * r) as u32).clamp(1, size);
    let resized = resize_rgb(rgb, nw, nh);
    let dw = f64::from(size - nw) / 2.0;
    let dh = f64::from(size - nh) / 2.0;
    let left = round_even(dw - 0.1).max(0.0) as u32;
    let top = round_even(dh - 0.1).max(0.0) as u32;
    let side = size as usize;
    let plane = side * side;
    let mut data = vec![f32::from(*pad_value) / 255.0; 3 * plane];
    // Row by row into each channel's plane: contiguous writes.
    let (left, top) = (left as usize, top as usize);
    let width = (nw as usize).min(side.saturating_sub(left));
    let rows = resized.as_raw().chunks_exact(3 * nw as usize);
    for (y, row) in rows.enumerate().take(side.saturating_sub(top)) {
        for (c, channel) in data.chunks_exact_mut(plane).enumerate() {
            let start = (top + y) * side + left;
            for (d, px) in channel[start..start + width]
                .iter_mut()
                .zip(row.chunks_exact(3))
            {
                *d = f32::from(px[c]) / 255.0;
            }
        }
    }
    let tensor = Tensor::new(vec![1, 3, side, side], TensorData::Fp32(data))
        .expect("3 × size × size elements");
    (
        NamedTensor::new(manifest.inputs[0].name.clone(), tensor),
        Letterbox {
            scale: r as f32,
            pad_x: left as f32,
            pad_y: top as f32,
            width: w,
            height: h,
        },
    )
}
