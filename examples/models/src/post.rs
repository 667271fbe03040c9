//! Turning model outputs into answers: classes, embeddings, boxes.

use example_tensor::{Tensor, TensorData};
use serde::Serialize;

use crate::error::{InputError, InputErrorKind};
use crate::image::Letterbox;

/// A class and its probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Class {
    /// The class index.
    pub index: usize,
    /// Its label (the index as text when there are no labels).
    pub label: String,
    /// Its softmax probability, in (0, 1].
    pub score: f32,
}

/// A detected object.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Detection {
    /// `[x1, y1, x2, y2]` in the original image's pixels.
    pub bbox: [f32; 4],
    /// The class index.
    pub class: usize,
    /// Its label.
    pub label: String,
    /// The class score.
    pub score: f32,
}

fn output_error(message: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::Output, message)
}

fn label(labels: &[String], i: usize) -> String {
    labels.get(i).cloned().unwrap_or_else(|| i.to_string())
}

fn f32_data<'a>(t: &'a Tensor, what: &str) -> Result<&'a [f32], InputError> {
    match &t.data {
        TensorData::Fp32(v) => Ok(v),
        other => Err(output_error(format!(
            "{what} must be FP32, got {}",
            other.datatype()
        ))),
    }
}

/// The `k` most probable classes of one item's logits (softmax over all),
/// best first.
pub fn top_k(logits: &[f32], k: usize, labels: &[String]) -> Vec<Class> {
    if logits.is_empty() {
        return Vec::new();
    }
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exps: Vec<f32> = logits.iter().map(|&v| (v - max).exp()).collect();
    let sum: f32 = exps.iter().sum();
    let mut order: Vec<usize> = (0..logits.len()).collect();
    order.sort_by(|&a, &b| logits[b].total_cmp(&logits[a]).then(a.cmp(&b)));
    order
        .into_iter()
        .take(k)
        .map(|i| Class {
            index: i,
            label: label(labels, i),
            score: exps[i] / sum,
        })
        .collect()
}

/// One item's sentence embedding from the model output: `[1, dim]` when the
/// model pools (returned L2-normalised), or token embeddings
/// `[1, tokens, dim]`, mean-pooled over `mask` (the item's attention mask;
/// missing positions count as padding) and L2-normalised, as
/// sentence-transformers does.
pub fn embedding(output: &Tensor, mask: Option<&[i64]>) -> Result<Vec<f32>, InputError> {
    let data = f32_data(output, "the embedding output")?;
    let mut v = match output.shape.as_slice() {
        [1, _dim] => data.to_vec(),
        [1, tokens, dim] => {
            let mut sum = vec![0f32; *dim];
            let mut count = 0f32;
            for t in 0..*tokens {
                let on = mask.is_none_or(|m| m.get(t).copied().unwrap_or(0) != 0);
                if on {
                    count += 1.0;
                    for (s, x) in sum.iter_mut().zip(&data[t * dim..(t + 1) * dim]) {
                        *s += x;
                    }
                }
            }
            let count = count.max(1e-9);
            sum.into_iter().map(|s| s / count).collect()
        }
        shape => {
            return Err(output_error(format!(
                "an embedding output must be [1, dim] or [1, tokens, dim], got {shape:?}"
            )))
        }
    };
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-12);
    v.iter_mut().for_each(|x| *x /= norm);
    Ok(v)
}

fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = (a[2].min(b[2]) - a[0].max(b[0])).max(0.0);
    let ih = (a[3].min(b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let area = |r: &[f32; 4]| (r[2] - r[0]).max(0.0) * (r[3] - r[1]).max(0.0);
    let union = area(a) + area(b) - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

/// The most candidates that enter non-maximum suppression (as ultralytics).
const MAX_NMS_CANDIDATES: usize = 30_000;

/// Decodes one item's raw YOLOv8 head output `[1, 4 + classes, anchors]`
/// (boxes as center x, center y, width, height in model pixels; class
/// scores): the best class per anchor above `conf`, per-class
/// non-maximum suppression at `iou_threshold`, at most `max_detections`
/// boxes, mapped back to the original image through the letterbox and
/// clipped to it. Best first.
pub fn detections(
    output: &Tensor,
    letterbox: &Letterbox,
    conf: f32,
    iou_threshold: f32,
    max_detections: usize,
    labels: &[String],
) -> Result<Vec<Detection>, InputError> {
    let data = f32_data(output, "the detection output")?;
    let [1, channels, anchors] = output.shape[..] else {
        return Err(output_error(format!(
            "a YOLOv8 output must be [1, 4 + classes, anchors], got {:?}",
            output.shape
        )));
    };
    if channels <= 4 {
        return Err(output_error(format!(
            "a YOLOv8 output needs more than 4 channels, got {channels}"
        )));
    }
    let at = |c: usize, a: usize| data[c * anchors + a];
    let mut candidates: Vec<(f32, usize, [f32; 4])> = Vec::new();
    for a in 0..anchors {
        let (mut best, mut class) = (f32::NEG_INFINITY, 0);
        for c in 4..channels {
            let s = at(c, a);
            if s > best {
                best = s;
                class = c - 4;
            }
        }
        if best > conf {
            let (cx, cy, w, h) = (at(0, a), at(1, a), at(2, a), at(3, a));
            candidates.push((
                best,
                class,
                [cx - w / 2.0, cy - h / 2.0, cx + w / 2.0, cy + h / 2.0],
            ));
        }
    }
    candidates.sort_by(|a, b| b.0.total_cmp(&a.0));
    candidates.truncate(MAX_NMS_CANDIDATES);
    let mut kept: Vec<(f32, usize, [f32; 4])> = Vec::new();
    for cand in candidates {
        if kept.len() >= max_detections {
            break;
        }
        if kept
            .iter()
            .all(|k| k.1 != cand.1 || iou(&k.2, &cand.2) <= iou_threshold)
        {
            kept.push(cand);
        }
    }
    let (w, h) = (letterbox.width as f32, letterbox.height as f32);
    let scale = letterbox.scale.max(f32::MIN_POSITIVE);
    Ok(kept
        .into_iter()
        .map(|(score, class, b)| {
            let x = |v: f32| ((v - letterbox.pad_x) / scale).clamp(0.0, w);
            let y = |v: f32| ((v - letterbox.pad_y) / scale).clamp(0.0, h);
            Detection {
                bbox: [x(b[0]), y(b[1]), x(b[2]), y(b[3])],
                class,
                label: label(labels, class),
                score,
            }
        })
        .collect())
}
