//! The model runtime of convoy's multi-model server: TorchScript models on
//! libtorch (through `tch`), described by a manifest (`model.json`), with the
//! pre- and post-processing of each model kind.
//!
//! - [`Manifest`]: a model's inputs, outputs, labels and processing.
//! - [`Model`]: a loaded model; [`Model::forward`] runs one batch of items
//!   (each a request's named tensors) in one forward pass on an
//!   [`Executor`]'s compute threads, which every model of a process shares
//!   so that libtorch's threads never outnumber the cores.
//! - [`Contract`]: what one request's inputs must satisfy before they join
//!   a batch (names, datatypes, fixed dimensions, rows, sequence length,
//!   token ids, element counts), from the manifest and its tokenizer.
//! - [`image`], [`text`], [`post`]: pure functions the server runs off the
//!   async threads: bounded image decoding, the torchvision and letterbox
//!   transforms, tokenization, top-k, pooling, YOLO decoding with NMS.
//!
//! The runtime ([`Model`], [`LoadOptions`], [`synthetic_input`]) is the
//! default feature `torch`; without it the crate builds without libtorch
//! (the fuzz harness drives [`image`] and [`text`] that way).
//!
//! ```no_run
//! use example_models::{image, post, LoadOptions, Model};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let model = Model::load("models/resnet50/1".as_ref(), &LoadOptions::default())?;
//! let img = image::decode(&std::fs::read("cat.jpg")?, &image::ImageLimits::default())?;
//! let input = image::classify_input(&img, model.manifest());
//! let outputs = model.forward(vec![vec![input]]).await?;
//! let logits = match &outputs[0][0].tensor.data {
//!     example_tensor::TensorData::Fp32(v) => v.clone(),
//!     _ => unreachable!("the manifest says FP32"),
//! };
//! for class in post::top_k(&logits, 5, &model.manifest().label_names) {
//!     println!("{} {:.3}", class.label, class.score);
//! }
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod contract;
mod error;
#[cfg(feature = "torch")]
mod executor;
#[cfg(feature = "torch")]
pub mod hooks;
pub mod image;
mod manifest;
pub mod post;
#[cfg(feature = "torch")]
mod runtime;
pub mod text;

pub use contract::{Contract, ContractError, DEFAULT_MAX_ELEMENTS};
pub use error::{InputError, InputErrorKind, ModelError, ModelErrorKind};
#[cfg(feature = "torch")]
pub use executor::Executor;
pub use manifest::{Manifest, ModelKind, Postprocess, Preprocess, TensorSpec, MANIFEST_FILE};
#[cfg(feature = "torch")]
pub use runtime::{synthetic_input, Device, LoadOptions, Model};
