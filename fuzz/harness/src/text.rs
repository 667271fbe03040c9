//! The server's text path (`example_models::text`): arbitrary bytes (as
//! lossy UTF-8, as the server's JSON and form fields arrive) through the
//! tokenizer with truncation. The tokenizer is the MiniLM pipeline (BERT
//! normalizer and pre-tokenizer, WordPiece, `[CLS] … [SEP]` template) with
//! a small vocabulary, checked in under `fixtures/text/` so that the replay
//! needs no model download; when `make setup` has exported the real MiniLM
//! (`models/minilm/1`), it runs too. Checked:
//! - no panic; a text either encodes or is refused with a typed
//!   [`InputError`] of kind `Text`;
//! - every tensor is `[1, n]` INT64 with `1 <= n <= max_tokens`, one per
//!   manifest input in its order, and `encoded_len` agrees with `n`;
//! - ids are in the vocabulary, the sequence starts with `[CLS]` and ends
//!   with `[SEP]`, the attention mask is all ones and the token types all
//!   zeros.

use std::path::{Path, PathBuf};

use example_models::text::TextEncoder;
use example_models::{InputErrorKind, Manifest};
use example_tensor::TensorData;

struct Fixture {
    encoder: TextEncoder,
    inputs: Vec<String>,
    vocab: usize,
    cls: i64,
    sep: i64,
}

fn load(dir: &Path) -> Fixture {
    let manifest = Manifest::load(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let encoder = TextEncoder::from_manifest(dir, &manifest)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let tokenizer: serde_json::Value = serde_json::from_slice(
        &std::fs::read(dir.join("tokenizer.json")).expect("a readable tokenizer.json"),
    )
    .expect("tokenizer.json is JSON");
    let vocab = tokenizer["model"]["vocab"]
        .as_object()
        .expect("a WordPiece vocabulary");
    let id = |token: &str| vocab[token].as_i64().expect("a special token id");
    Fixture {
        inputs: manifest.inputs.iter().map(|s| s.name.clone()).collect(),
        cls: id("[CLS]"),
        sep: id("[SEP]"),
        vocab: vocab.len(),
        encoder,
    }
}

fn fixtures() -> &'static [Fixture] {
    static F: std::sync::OnceLock<Vec<Fixture>> = std::sync::OnceLock::new();
    F.get_or_init(|| {
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut all = vec![load(&here.join("fixtures/text"))];
        let minilm = here.join("../../models/minilm/1");
        if minilm.join("tokenizer.json").is_file() {
            all.push(load(&minilm));
        }
        all
    })
}

/// Runs one input. Panics when a promise breaks.
pub fn run(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for f in fixtures() {
        check(f, &text);
    }
}

fn check(f: &Fixture, text: &str) {
    let max = f.encoder.max_tokens();
    let tensors = match f.encoder.encode(text) {
        Ok(t) => t,
        Err(e) => {
            assert_eq!(e.kind(), InputErrorKind::Text, "{e}");
            assert!(!e.message().is_empty());
            return;
        }
    };
    let names: Vec<&str> = tensors.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names, f.inputs, "one tensor per input, in order");
    let n = tensors[0].tensor.shape[1];
    assert!((1..=max).contains(&n), "{n} tokens, the maximum is {max}");
    assert_eq!(f.encoder.encoded_len(text), Ok(n));
    for t in &tensors {
        assert_eq!(t.tensor.shape, vec![1, n], "{}", t.name);
        let TensorData::Int64(v) = &t.tensor.data else {
            panic!("{}: not INT64", t.name);
        };
        assert_eq!(v.len(), n);
        match t.name.as_str() {
            "input_ids" => {
                assert!(v.iter().all(|&id| (0..f.vocab as i64).contains(&id)));
                assert_eq!(v.first(), Some(&f.cls), "starts with [CLS]");
                assert_eq!(v.last(), Some(&f.sep), "ends with [SEP]");
            }
            "attention_mask" => assert!(v.iter().all(|&m| m == 1)),
            _ => assert!(v.iter().all(|&m| m == 0)),
        }
    }
}
