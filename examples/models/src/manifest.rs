//! The model manifest, `model.json`: what the runtime needs to know about a
//! TorchScript file to serve it. See the crate's README for the format.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use example_tensor::DataType;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::ModelError;

/// The file name of a manifest inside a model version directory.
pub const MANIFEST_FILE: &str = "model.json";

/// What a model does, which decides its pre- and post-processing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ModelKind {
    /// Image classification: class scores per image (ResNet).
    Classify,
    /// Text embedding: one vector per text (MiniLM).
    Embed,
    /// Object detection: boxes per image (YOLO).
    Detect,
}

/// One input or output of a model.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorSpec {
    /// The name requests use.
    pub name: String,
    /// The element type, serialized as the KServe v2 name (`"FP32"`).
    #[serde(serialize_with = "ser_datatype", deserialize_with = "de_datatype")]
    pub datatype: DataType,
    /// The shape; `-1` marks a dynamic dimension. The first is the batch
    /// dimension and is always dynamic.
    pub shape: Vec<i64>,
}

fn ser_datatype<S: Serializer>(d: &DataType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(d.as_str())
}

fn de_datatype<'de, D: Deserializer<'de>>(d: D) -> Result<DataType, D::Error> {
    let name = String::deserialize(d)?;
    DataType::parse(&name).ok_or_else(|| {
        serde::de::Error::custom(format!(
            "unknown datatype {name:?} (expected a KServe v2 name such as \"FP32\" or \"INT64\")"
        ))
    })
}

/// How inputs are prepared before the model sees them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Preprocess {
    /// torchvision's classification transform: resize the shorter side to
    /// `resize`, center-crop `crop`×`crop`, scale to [0, 1], normalise.
    ImageClassify {
        /// The shorter side after resizing.
        resize: u32,
        /// The side of the square center crop.
        crop: u32,
        /// Per-channel (RGB) mean.
        mean: [f32; 3],
        /// Per-channel (RGB) standard deviation.
        std: [f32; 3],
    },
    /// YOLO's letterbox: scale to fit `size`×`size` keeping the aspect ratio,
    /// pad with `pad_value`, scale to [0, 1].
    Letterbox {
        /// The side of the square input.
        size: u32,
        /// The padding grey level (0–255).
        pad_value: u8,
    },
    /// Tokenization with a Hugging Face `tokenizer.json`.
    Text {
        /// The tokenizer file, relative to the model directory.
        tokenizer: String,
        /// Texts are truncated to this many tokens.
        max_tokens: usize,
        /// The token id that pads sequences in a batch.
        #[serde(default)]
        pad_id: i64,
        /// The model's positions: the longest sequence it takes (a
        /// manifest without it: `max_tokens`).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        max_positions: Option<usize>,
        /// The vocabulary size: token ids lie in `[0, vocab_size)` (a
        /// manifest without it: the tokenizer's).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        vocab_size: Option<usize>,
    },
    /// Inputs are tensors as given.
    None,
}

/// How outputs are turned into answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Postprocess {
    /// Softmax over logits, the `k` best classes with labels.
    TopK {
        /// How many classes to return.
        k: usize,
    },
    /// A sentence embedding.
    Embedding {
        /// Pooling over tokens: `"mean"` (over the attention mask).
        pooling: String,
        /// Whether the pooled vector is L2-normalised.
        normalize: bool,
        /// True when the TorchScript already pools (and normalises): its
        /// output is `[N, dim]`; false when it returns token embeddings
        /// `[N, tokens, dim]`.
        #[serde(default)]
        pooled_in_model: bool,
    },
    /// YOLOv8 decoding of the raw head output `[N, 4 + classes, anchors]`,
    /// then per-class non-maximum suppression.
    Yolov8 {
        /// Minimum class score.
        conf: f32,
        /// IoU above which the lower-scoring box is suppressed.
        iou: f32,
        /// At most this many boxes per image.
        max_detections: usize,
    },
    /// Outputs are returned as tensors.
    None,
}

/// A model's manifest, read from `models/<name>/<version>/model.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    /// The model's name.
    pub name: String,
    /// The version (a directory name).
    pub version: String,
    /// What the model does.
    pub kind: ModelKind,
    /// The TorchScript file, relative to the manifest's directory.
    pub file: String,
    /// The inputs, in the order the TorchScript `forward` takes them.
    pub inputs: Vec<TensorSpec>,
    /// The outputs, in the order the TorchScript `forward` returns them.
    pub outputs: Vec<TensorSpec>,
    /// A labels file (one label per line), relative to the manifest's
    /// directory; read by [`Manifest::load`] into [`Manifest::label_names`].
    #[serde(default)]
    pub labels: Option<String>,
    /// Input preparation.
    #[serde(default = "preprocess_none")]
    pub preprocess: Preprocess,
    /// Output interpretation.
    #[serde(default = "postprocess_none")]
    pub postprocess: Postprocess,
    /// The versions of the software that exported the model.
    #[serde(default)]
    pub exported_with: BTreeMap<String, String>,
    /// Where the weights come from (free text).
    #[serde(default)]
    pub weights: Option<String>,
    /// The labels, loaded from [`Manifest::labels`] (empty when there is none).
    #[serde(skip)]
    pub label_names: Vec<String>,
}

fn preprocess_none() -> Preprocess {
    Preprocess::None
}

fn postprocess_none() -> Postprocess {
    Postprocess::None
}

impl Manifest {
    /// Reads `dir/model.json` and the labels file it names, and checks it.
    pub fn load(dir: &Path) -> Result<Manifest, ModelError> {
        let path = dir.join(MANIFEST_FILE);
        let text = fs::read_to_string(&path).map_err(|e| ModelError::manifest(&path, e))?;
        let mut manifest = Manifest::parse(&text).map_err(|e| ModelError::manifest(&path, e))?;
        if let Some(labels) = &manifest.labels {
            let labels_path = dir.join(labels);
            let text = fs::read_to_string(&labels_path)
                .map_err(|e| ModelError::manifest(&path, format!("labels {labels:?}: {e}")))?;
            manifest.label_names = text.lines().map(str::to_owned).collect();
        }
        Ok(manifest)
    }

    /// Parses and checks a manifest (labels are not read).
    pub fn parse(json: &str) -> Result<Manifest, String> {
        let manifest: Manifest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        manifest.validate()?;
        Ok(manifest)
    }

    fn validate(&self) -> Result<(), String> {
        if self.name.is_empty() || self.version.is_empty() {
            return Err("name and version must not be empty".into());
        }
        if self.inputs.is_empty() || self.outputs.is_empty() {
            return Err("a model needs at least one input and one output".into());
        }
        for (which, specs) in [("inputs", &self.inputs), ("outputs", &self.outputs)] {
            for (i, spec) in specs.iter().enumerate() {
                if spec.name.is_empty() {
                    return Err(format!("{which}[{i}]: empty name"));
                }
                if specs[..i].iter().any(|s| s.name == spec.name) {
                    return Err(format!("{which}[{i}]: duplicate name {:?}", spec.name));
                }
                if spec.shape.first() != Some(&-1) {
                    return Err(format!(
                        "{which}[{i}] {:?}: the first dimension is the batch dimension and must be -1, got shape {:?}",
                        spec.name, spec.shape
                    ));
                }
                if spec.shape.iter().any(|&d| d < -1 || d == 0) {
                    return Err(format!(
                        "{which}[{i}] {:?}: dimensions must be positive or -1, got {:?}",
                        spec.name, spec.shape
                    ));
                }
                if spec.datatype == DataType::Bytes {
                    return Err(format!(
                        "{which}[{i}] {:?}: BYTES tensors cannot be TorchScript inputs or outputs",
                        spec.name
                    ));
                }
            }
        }
        match (&self.preprocess, self.kind) {
            (
                Preprocess::ImageClassify {
                    crop, resize, std, ..
                },
                ModelKind::Classify,
            ) => {
                if *crop == 0 || *resize < *crop {
                    return Err(format!(
                        "preprocess: need 0 < crop <= resize, got crop {crop}, resize {resize}"
                    ));
                }
                if std.iter().any(|s| *s <= 0.0) {
                    return Err("preprocess: std must be positive".into());
                }
            }
            (Preprocess::Letterbox { size, .. }, ModelKind::Detect) if *size == 0 => {
                return Err("preprocess: letterbox size must be positive".into());
            }
            (Preprocess::Text { max_tokens, .. }, ModelKind::Embed) if *max_tokens == 0 => {
                return Err("preprocess: max_tokens must be positive".into());
            }
            (Preprocess::ImageClassify { .. }, _)
            | (Preprocess::Letterbox { .. }, ModelKind::Classify | ModelKind::Embed)
            | (Preprocess::Text { .. }, ModelKind::Classify | ModelKind::Detect) => {
                return Err(format!(
                    "preprocess {:?} does not fit a model of kind {:?}",
                    self.preprocess, self.kind
                ));
            }
            _ => {}
        }
        match &self.postprocess {
            Postprocess::TopK { k: 0 } => return Err("postprocess: k must be positive".into()),
            Postprocess::Yolov8 { conf, iou, .. }
                if !(0.0..=1.0).contains(conf) || !(0.0..=1.0).contains(iou) =>
            {
                return Err("postprocess: conf and iou must be within [0, 1]".into());
            }
            Postprocess::Embedding { pooling, .. } if pooling != "mean" => {
                return Err(format!(
                    "postprocess: unsupported pooling {pooling:?} (only \"mean\")"
                ));
            }
            _ => {}
        }
        Ok(())
    }

    /// The input spec with this name.
    pub fn input(&self, name: &str) -> Option<&TensorSpec> {
        self.inputs.iter().find(|s| s.name == name)
    }

    /// The output spec with this name.
    pub fn output(&self, name: &str) -> Option<&TensorSpec> {
        self.outputs.iter().find(|s| s.name == name)
    }
}
