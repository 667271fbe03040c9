//! Production drift monitoring of a deployment (`[deployment.drift]`):
//! convoy-drift's monitor fed by every version's item service, with the
//! features the runtime already has at hand, per model kind:
//!
//! | kind | inputs (the model's prepared tensors) | outputs |
//! |---|---|---|
//! | classify | mean of each normalised colour channel, standard deviation of the image | predicted class (categorical), its softmax probability |
//! | embed | tokens in the text (attention mask) | the embedding's first four coordinates |
//! | detect | mean of each normalised colour channel, standard deviation of the image | — |
//! | identity | mean of the first input | mean of the first output |
//!
//! Each sampled request contributes its first row. The reference (the
//! export writes `drift_reference.json` beside the model and names it in the
//! manifest, `scripts/python/drift_reference.py`) must hold these columns in
//! this order; the server refuses to start otherwise.

use std::sync::Arc;

use convoy_drift::stats::ColumnKind;
use convoy_drift::{DriftHandle, Features, Monitor, Row, Value};
use example_tensor::{Tensor, TensorData};
use tower::BoxError;

use crate::config::DeploymentConfig;
pub use crate::config::{default_reference, reference_from};
use crate::deploy::{Answer, Item};
use crate::model::Kind;

/// The reference file name the export writes beside a model.
pub const REFERENCE_FILE: &str = "drift_reference.json";

/// The columns the monitor of a `kind` model produces, in order.
pub fn columns(kind: Kind) -> &'static [(&'static str, ColumnKind)] {
    use ColumnKind::{Categorical as C, Numerical as N};
    match kind {
        Kind::Classify => &[
            ("red_mean", N),
            ("green_mean", N),
            ("blue_mean", N),
            ("pixel_std", N),
            ("class", C),
            ("confidence", N),
        ],
        Kind::Embed => &[
            ("tokens", N),
            ("emb_0", N),
            ("emb_1", N),
            ("emb_2", N),
            ("emb_3", N),
        ],
        Kind::Detect => &[
            ("red_mean", N),
            ("green_mean", N),
            ("blue_mean", N),
            ("pixel_std", N),
        ],
        Kind::Identity => &[("input_mean", N), ("output_mean", N)],
    }
}

/// A deployment's monitor and what its rows are made of.
#[derive(Debug, Clone)]
pub struct DriftMonitor {
    /// The monitor.
    pub handle: DriftHandle,
    /// The model kind.
    pub kind: Kind,
}

/// The monitor of deployment `d` (a `kind` model), started on the first
/// call if it has a `[deployment.drift]` (its versions share it): checks the
/// section (every error names `deployment.drift.<field>`) and that the
/// reference holds [`columns`]`(kind)`. Needs a tokio runtime.
pub fn monitor_for(d: &DeploymentConfig, kind: Kind) -> Result<Option<DriftMonitor>, BoxError> {
    let Some(section) = &d.drift else {
        return Ok(None);
    };
    section
        .monitor_or_start(|config| {
            let settings = config
                .validate()
                .map_err(|e| format!("deployment {}: deployment.{e}", d.name))?;
            let want = columns(kind);
            let got: Vec<(&str, ColumnKind)> = settings
                .reference
                .columns
                .iter()
                .map(|c| (c.name.as_str(), c.kind))
                .collect();
            if got != want {
                return Err(format!(
                    "deployment {}: deployment.drift.reference: columns {got:?}, but a {kind:?} model's monitor produces {want:?}",
                    d.name
                )
                .into());
            }
            Ok(DriftMonitor {
                handle: Monitor::start(d.name.as_str(), settings),
                kind,
            })
        })
        .map(Some)
}

/// The features of an item and its answer, by model kind.
#[derive(Debug, Clone, Copy)]
pub struct ItemFeatures {
    /// The model kind.
    pub kind: Kind,
}

/// The first row of `t` as numbers (`None` for BYTES).
fn first_row(t: &Tensor) -> Option<Vec<f64>> {
    let rows = t.rows().max(1);
    let n = t.data.len() / rows;
    Some(match &t.data {
        TensorData::Bool(v) => v[..n].iter().map(|&x| f64::from(u8::from(x))).collect(),
        TensorData::Uint8(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint16(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint32(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Uint64(v) => v[..n].iter().map(|&x| x as f64).collect(),
        TensorData::Int8(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int16(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int32(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Int64(v) => v[..n].iter().map(|&x| x as f64).collect(),
        TensorData::Fp16(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp32(v) => v[..n].iter().map(|&x| f64::from(x)).collect(),
        TensorData::Fp64(v) => v[..n].to_vec(),
        TensorData::Bytes(_) => return None,
    })
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.iter().sum::<f64>() / v.len() as f64
}

fn std_dev(v: &[f64]) -> f64 {
    let m = mean(v);
    (v.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / v.len() as f64).sqrt()
}

/// Channel means and the standard deviation of one CHW image.
fn image_stats(pixels: &[f64], row: &mut Row) {
    let plane = pixels.len() / 3;
    for c in 0..3 {
        row.push(Value::Num(mean(&pixels[c * plane..(c + 1) * plane])));
    }
    row.push(Value::Num(std_dev(pixels)));
}

/// A missing value: NaN, dropped by the tests as Evidently drops it.
const MISSING: Value = Value::Num(f64::NAN);

impl Features<Item, Answer> for ItemFeatures {
    fn inputs(&self, item: &Item, row: &mut Row) {
        let first = item.inputs.first().and_then(|t| first_row(&t.tensor));
        match self.kind {
            Kind::Classify | Kind::Detect => match first {
                Some(p) if p.len() >= 3 => image_stats(&p, row),
                _ => row.extend([MISSING; 4]),
            },
            Kind::Embed => {
                // Tokens: the attention mask's ones, or the non-zero ids.
                let mask = item
                    .inputs
                    .iter()
                    .find(|t| t.name == "attention_mask")
                    .and_then(|t| first_row(&t.tensor));
                let tokens = match (mask, first) {
                    (Some(m), _) => m.iter().sum::<f64>(),
                    (None, Some(ids)) => ids.iter().filter(|&&x| x != 0.0).count() as f64,
                    (None, None) => f64::NAN,
                };
                row.push(Value::Num(tokens));
            }
            Kind::Identity => row.push(Value::Num(first.map_or(f64::NAN, |v| mean(&v)))),
        }
    }

    fn outputs(&self, answer: &Answer, row: &mut Row) {
        let first = answer.outputs.first().and_then(|t| first_row(&t.tensor));
        match self.kind {
            Kind::Classify => match first {
                Some(logits) if !logits.is_empty() => {
                    let (best, &top) = logits
                        .iter()
                        .enumerate()
                        .max_by(|a, b| a.1.total_cmp(b.1))
                        .expect("not empty");
                    let z: f64 = logits.iter().map(|&x| (x - top).exp()).sum();
                    row.push(Value::Cat(Arc::from(best.to_string())));
                    row.push(Value::Num(1.0 / z));
                }
                _ => row.extend([Value::Cat(Arc::from("none")), MISSING]),
            },
            Kind::Embed => {
                let e = first.unwrap_or_default();
                for i in 0..4 {
                    row.push(Value::Num(e.get(i).copied().unwrap_or(f64::NAN)));
                }
            }
            Kind::Detect => {}
            Kind::Identity => row.push(Value::Num(first.map_or(f64::NAN, |v| mean(&v)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use example_tensor::NamedTensor;

    fn tensor(shape: Vec<usize>, v: Vec<f32>) -> NamedTensor {
        NamedTensor::new("x", Tensor::new(shape, TensorData::Fp32(v)).unwrap())
    }

    #[test]
    fn classify_rows_have_the_declared_columns() {
        let f = ItemFeatures {
            kind: Kind::Classify,
        };
        // Two rows of a 3x1x2 image; only the first counts.
        let item = Item::new(
            vec![tensor(
                vec![2, 3, 1, 2],
                vec![0., 2., 4., 4., -1., 1., 9., 9., 9., 9., 9., 9.],
            )],
            Kind::Classify,
        );
        let answer = Answer {
            version: Arc::from("1"),
            outputs: vec![tensor(vec![1, 3], vec![0.0, 5.0, 1.0])],
        };
        let mut row = Row::new();
        f.inputs(&item, &mut row);
        f.outputs(&answer, &mut row);
        assert_eq!(row.len(), columns(Kind::Classify).len());
        assert_eq!(row[0], Value::Num(1.0));
        assert_eq!(row[1], Value::Num(4.0));
        assert_eq!(row[2], Value::Num(0.0));
        assert_eq!(row[4], Value::Cat(Arc::from("1")));
        match row[5] {
            Value::Num(p) => assert!(p > 0.97 && p < 1.0, "{p}"),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn every_kind_fills_its_columns() {
        for kind in [Kind::Classify, Kind::Embed, Kind::Detect, Kind::Identity] {
            let f = ItemFeatures { kind };
            let item = Item::new(vec![tensor(vec![1, 6], vec![1.0; 6])], kind);
            let answer = Answer {
                version: Arc::from("1"),
                outputs: vec![tensor(vec![1, 6], vec![0.5; 6])],
            };
            let mut row = Row::new();
            f.inputs(&item, &mut row);
            f.outputs(&answer, &mut row);
            assert_eq!(row.len(), columns(kind).len(), "{kind:?}");
        }
    }
}
