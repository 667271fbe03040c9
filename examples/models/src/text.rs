//! Text inputs: tokenization with the model's `tokenizer.json`.

use std::path::Path;

use example_tensor::{NamedTensor, Tensor, TensorData};
use tokenizers::{Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy};

use crate::error::{InputError, InputErrorKind, ModelError};
use crate::manifest::{Manifest, Preprocess};

/// Turns texts into the model's `input_ids` and `attention_mask` (and
/// `token_type_ids` when the model takes them), truncated at the manifest's
/// `max_tokens`. Padding happens when items are joined into a batch.
#[derive(Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_tokens: usize,
    input_names: Vec<String>,
}

impl std::fmt::Debug for TextEncoder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TextEncoder")
            .field("max_tokens", &self.max_tokens)
            .field("inputs", &self.input_names)
            .finish()
    }
}

fn text_error(message: impl Into<String>) -> InputError {
    InputError::new(InputErrorKind::Text, message)
}

impl TextEncoder {
    /// Loads the tokenizer the manifest names (relative to `dir`).
    pub fn from_manifest(dir: &Path, manifest: &Manifest) -> Result<TextEncoder, ModelError> {
        let Preprocess::Text {
            tokenizer,
            max_tokens,
            ..
        } = &manifest.preprocess
        else {
            return Err(ModelError::manifest(
                &dir.join(crate::manifest::MANIFEST_FILE),
                "the model has no text preprocessing",
            ));
        };
        let path = dir.join(tokenizer);
        let mut tok = Tokenizer::from_file(&path).map_err(|e| ModelError::load(&path, e))?;
        tok.with_truncation(Some(TruncationParams {
            max_length: *max_tokens,
            strategy: TruncationStrategy::LongestFirst,
            stride: 0,
            direction: TruncationDirection::Right,
        }))
        .map_err(|e| ModelError::load(&path, e))?;
        tok.with_padding(None);
        for spec in &manifest.inputs {
            if !matches!(
                spec.name.as_str(),
                "input_ids" | "attention_mask" | "token_type_ids"
            ) {
                return Err(ModelError::manifest(
                    &dir.join(crate::manifest::MANIFEST_FILE),
                    format!(
                        "text input {:?} is not one of input_ids, attention_mask, token_type_ids",
                        spec.name
                    ),
                ));
            }
        }
        Ok(TextEncoder {
            tokenizer: tok,
            max_tokens: *max_tokens,
            input_names: manifest.inputs.iter().map(|s| s.name.clone()).collect(),
        })
    }

    /// The tokenizer's vocabulary size (added tokens included): token ids
    /// lie in `[0, vocab_size)`.
    pub fn vocab_size(&self) -> usize {
        self.tokenizer.get_vocab_size(true)
    }

    /// The most tokens a text becomes.
    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }

    fn tokenize(&self, text: &str) -> Result<tokenizers::Encoding, InputError> {
        self.tokenizer
            .encode(text, true)
            .map_err(|e| text_error(format!("cannot tokenize the text: {e}")))
    }

    /// The model's inputs for one text, each `[1, tokens]` INT64.
    pub fn encode(&self, text: &str) -> Result<Vec<NamedTensor>, InputError> {
        Ok(self.inputs(&self.tokenize(text)?))
    }

    /// [`encode`](Self::encode) for many texts at once, in order: one call
    /// of the tokenizer's batch encoder for all of them (a request's texts,
    /// tokenized in one step off the async threads). A text that cannot be
    /// tokenized fails alone: its entry is the error, the others encode.
    pub fn encode_many<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Vec<Result<Vec<NamedTensor>, InputError>> {
        let all: Vec<&str> = texts.iter().map(AsRef::as_ref).collect();
        match self.tokenizer.encode_batch(all, true) {
            Ok(encodings) => encodings.iter().map(|e| Ok(self.inputs(e))).collect(),
            // Which text failed is not told: each on its own.
            Err(_) => texts.iter().map(|t| self.encode(t.as_ref())).collect(),
        }
    }

    /// The model's inputs of one encoding, each `[1, tokens]` INT64.
    fn inputs(&self, enc: &tokenizers::Encoding) -> Vec<NamedTensor> {
        let n = enc.get_ids().len();
        let column = |values: Vec<i64>| {
            Tensor::new(vec![1, n], TensorData::Int64(values)).expect("one row of n tokens")
        };
        self.input_names
            .iter()
            .map(|name| {
                let values: Vec<i64> = match name.as_str() {
                    "input_ids" => enc.get_ids().iter().map(|&v| i64::from(v)).collect(),
                    "attention_mask" => enc
                        .get_attention_mask()
                        .iter()
                        .map(|&v| i64::from(v))
                        .collect(),
                    _ => enc.get_type_ids().iter().map(|&v| i64::from(v)).collect(),
                };
                NamedTensor::new(name.clone(), column(values))
            })
            .collect()
    }

    /// How many tokens a text becomes (after truncation): the key for
    /// batching texts of similar length together.
    pub fn encoded_len(&self, text: &str) -> Result<usize, InputError> {
        Ok(self.tokenize(text)?.get_ids().len())
    }
}
