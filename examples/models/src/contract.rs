//! A model's input contract: what one request's tensors must satisfy before
//! they join a batch, derived from the manifest and the files it names.
//!
//! A request that breaks the contract is the caller's error, known before
//! any compute: checking it at the door keeps it out of the batch (where it
//! would fail the forward pass for everyone batched with it) and out of
//! libtorch (whose error would leak the server's internals).
//!
//! ```no_run
//! use example_models::{Contract, Manifest};
//! use example_tensor::{NamedTensor, Tensor, TensorData};
//!
//! let manifest = Manifest::parse(r#"{
//!     "name": "m", "version": "1", "kind": "classify", "file": "model.pt",
//!     "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3]}],
//!     "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]
//! }"#).unwrap();
//! let contract = Contract::from_manifest(&manifest, None);
//! let ok = NamedTensor::new("x", Tensor::new(vec![1, 3], TensorData::Fp32(vec![0.0; 3])).unwrap());
//! assert!(contract.check(&[ok]).is_ok());
//! let empty = NamedTensor::new("x", Tensor::new(vec![0, 3], TensorData::Fp32(vec![])).unwrap());
//! let err = contract.check(&[empty]).unwrap_err();
//! assert_eq!(err.input(), "x");
//! assert_eq!(err.rule(), "batch");
//! ```

use std::fmt;

use example_tensor::{element_count, NamedTensor, TensorData};

use crate::manifest::{Manifest, Preprocess, TensorSpec};

/// Elements one input may hold at most unless a contract says otherwise
/// (64 Mi: a 256 MiB FP32 tensor).
pub const DEFAULT_MAX_ELEMENTS: usize = 64 << 20;

/// The rules one request's inputs must satisfy for a model.
#[derive(Debug, Clone, PartialEq)]
pub struct Contract {
    /// The inputs, by spec; `None` takes any names, datatypes and shapes
    /// (the rules on rows and elements still hold).
    inputs: Option<Vec<TensorSpec>>,
    /// Text models: every input shares the sequence dimension, at most this
    /// long.
    max_positions: Option<usize>,
    /// Text models: token ids of `input_ids` lie in `[0, vocab_size)`.
    vocab_size: Option<usize>,
    /// Rows one request may carry at most.
    max_rows: Option<usize>,
    /// Elements one input may hold at most.
    max_elements: usize,
}

/// A broken contract rule: the input and the rule, with a message saying
/// what was found. The caller's error (400 / `INVALID_ARGUMENT`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContractError {
    input: String,
    rule: &'static str,
    message: String,
}

impl ContractError {
    fn new(input: &str, rule: &'static str, message: String) -> Self {
        Self {
            input: input.to_string(),
            rule,
            message,
        }
    }

    /// The input that breaks the contract.
    pub fn input(&self) -> &str {
        &self.input
    }

    /// The rule it breaks: `name`, `datatype`, `shape`, `batch`, `rows`,
    /// `sequence`, `token_id` or `elements`.
    pub fn rule(&self) -> &'static str {
        self.rule
    }
}

impl fmt::Display for ContractError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "input {:?} ({}): {}",
            self.input, self.rule, self.message
        )
    }
}

impl std::error::Error for ContractError {}

impl Contract {
    /// A contract that takes any inputs: at least one, with one row count
    /// of at least 1, and at most [`DEFAULT_MAX_ELEMENTS`] elements each.
    pub fn any() -> Self {
        Self {
            inputs: None,
            max_positions: None,
            vocab_size: None,
            max_rows: None,
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }

    /// The contract of `manifest`'s model: its inputs' names, datatypes
    /// and fixed dimensions; for a text model the sequence limit
    /// (`max_positions`, or `max_tokens` for a manifest written before
    /// it) and the vocabulary (`vocab_size`, or `tokenizer_vocab`: the
    /// size the tokenizer gives).
    pub fn from_manifest(manifest: &Manifest, tokenizer_vocab: Option<usize>) -> Self {
        let (max_positions, vocab_size) = match &manifest.preprocess {
            Preprocess::Text {
                max_tokens,
                max_positions,
                vocab_size,
                ..
            } => (
                Some(max_positions.unwrap_or(*max_tokens)),
                vocab_size.or(tokenizer_vocab),
            ),
            _ => (None, None),
        };
        Self {
            inputs: Some(manifest.inputs.clone()),
            max_positions,
            vocab_size,
            max_rows: None,
            max_elements: DEFAULT_MAX_ELEMENTS,
        }
    }

    /// At most `rows` rows per request (the deployment's batch size).
    pub fn max_rows(mut self, rows: usize) -> Self {
        self.max_rows = Some(rows);
        self
    }

    /// At most `n` elements per input.
    pub fn max_elements(mut self, n: usize) -> Self {
        self.max_elements = n;
        self
    }

    /// Checks one request's inputs. Only shapes and, for `input_ids`, the
    /// values are read; nothing is allocated.
    pub fn check(&self, inputs: &[NamedTensor]) -> Result<(), ContractError> {
        let Some(first) = inputs.first() else {
            return Err(ContractError::new(
                "",
                "name",
                "a request needs at least one input".into(),
            ));
        };
        for (i, t) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|o| o.name == t.name) {
                return Err(ContractError::new(&t.name, "name", "given twice".into()));
            }
            self.check_one(t)?;
            if t.tensor.rows() != first.tensor.rows() {
                return Err(ContractError::new(
                    &t.name,
                    "rows",
                    format!(
                        "{} rows, but input {:?} has {}: every input of a request has the same batch dimension",
                        t.tensor.rows(),
                        first.name,
                        first.tensor.rows()
                    ),
                ));
            }
        }
        if let Some(specs) = &self.inputs {
            if let Some(missing) = specs
                .iter()
                .find(|s| !inputs.iter().any(|t| t.name == s.name))
            {
                return Err(ContractError::new(&missing.name, "name", "missing".into()));
            }
        }
        if self.max_positions.is_some() {
            let len = |t: &NamedTensor| t.tensor.shape.get(1).copied();
            if let Some(t) = inputs.iter().find(|t| len(t) != len(first)) {
                return Err(ContractError::new(
                    &t.name,
                    "sequence",
                    format!(
                        "sequence length {:?}, but input {:?} has {:?}: every input of a request has the same sequence dimension",
                        len(t),
                        first.name,
                        len(first)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_one(&self, t: &NamedTensor) -> Result<(), ContractError> {
        let shape = &t.tensor.shape;
        let name = t.name.as_str();
        let Some(&rows) = shape.first() else {
            return Err(ContractError::new(
                name,
                "shape",
                "a scalar has no batch dimension".into(),
            ));
        };
        if rows == 0 {
            return Err(ContractError::new(
                name,
                "batch",
                format!("shape {shape:?}: a request needs at least 1 row"),
            ));
        }
        if let Some(max) = self.max_rows.filter(|&m| rows > m) {
            return Err(ContractError::new(
                name,
                "batch",
                format!("{rows} rows, at most {max} per request"),
            ));
        }
        match element_count(shape) {
            Some(n) if n <= self.max_elements => {}
            _ => {
                return Err(ContractError::new(
                    name,
                    "elements",
                    format!(
                        "shape {shape:?} holds more than {} elements",
                        self.max_elements
                    ),
                ))
            }
        }
        let Some(specs) = &self.inputs else {
            return Ok(());
        };
        let Some(spec) = specs.iter().find(|s| s.name == t.name) else {
            let names: Vec<&str> = specs.iter().map(|s| s.name.as_str()).collect();
            return Err(ContractError::new(
                name,
                "name",
                format!("the model has no such input (inputs: {})", names.join(", ")),
            ));
        };
        if t.tensor.datatype() != spec.datatype {
            return Err(ContractError::new(
                name,
                "datatype",
                format!("{}, the model takes {}", t.tensor.datatype(), spec.datatype),
            ));
        }
        let fits = shape.len() == spec.shape.len()
            && shape
                .iter()
                .zip(&spec.shape)
                .all(|(&d, &s)| s < 0 && d > 0 || i64::try_from(d) == Ok(s));
        if !fits {
            return Err(ContractError::new(
                name,
                "shape",
                format!("shape {shape:?}, the model takes {:?}", spec.shape),
            ));
        }
        if let Some(max) = self.max_positions {
            let len = shape.get(1).copied().unwrap_or(0);
            if len > max {
                return Err(ContractError::new(
                    name,
                    "sequence",
                    format!("sequence length {len}, the model has {max} positions"),
                ));
            }
        }
        if let (Some(vocab), "input_ids") = (self.vocab_size, name) {
            check_token_ids(name, &t.tensor.data, vocab)?;
        }
        Ok(())
    }
}

fn check_token_ids(name: &str, data: &TensorData, vocab: usize) -> Result<(), ContractError> {
    let bad = |i: usize, id: i64| {
        ContractError::new(
            name,
            "token_id",
            format!("token id {id} at element {i} is outside the vocabulary [0, {vocab})"),
        )
    };
    let vocab = i64::try_from(vocab).unwrap_or(i64::MAX);
    let found = match data {
        TensorData::Int64(v) => v
            .iter()
            .position(|&id| !(0..vocab).contains(&id))
            .map(|i| (i, v[i])),
        TensorData::Int32(v) => v
            .iter()
            .position(|&id| !(0..vocab).contains(&i64::from(id)))
            .map(|i| (i, i64::from(v[i]))),
        _ => None,
    };
    match found {
        Some((i, id)) => Err(bad(i, id)),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use example_tensor::Tensor;

    use super::*;

    fn text() -> Contract {
        let m = Manifest::parse(
            r#"{"name": "t", "version": "1", "kind": "embed", "file": "model.pt",
                "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]},
                           {"name": "attention_mask", "datatype": "INT64", "shape": [-1, -1]}],
                "outputs": [{"name": "e", "datatype": "FP32", "shape": [-1, 4]}],
                "preprocess": {"type": "text", "tokenizer": "t.json", "max_tokens": 8}}"#,
        )
        .unwrap();
        Contract::from_manifest(&m, Some(100))
    }

    fn ids(shape: Vec<usize>, v: Vec<i64>) -> NamedTensor {
        NamedTensor::new(
            "input_ids",
            Tensor::new(shape, TensorData::Int64(v)).unwrap(),
        )
    }

    fn mask(shape: Vec<usize>) -> NamedTensor {
        let n = shape.iter().product();
        NamedTensor::new(
            "attention_mask",
            Tensor::new(shape, TensorData::Int64(vec![1; n])).unwrap(),
        )
    }

    fn rule(c: &Contract, inputs: &[NamedTensor]) -> (&'static str, String) {
        let e = c.check(inputs).unwrap_err();
        (e.rule(), e.input().to_string())
    }

    #[test]
    fn a_text_request_within_the_contract_passes() {
        let c = text();
        assert_eq!(
            c.check(&[ids(vec![2, 3], vec![0, 1, 99, 5, 6, 7]), mask(vec![2, 3])]),
            Ok(())
        );
    }

    #[test]
    fn each_rule_names_the_input() {
        let c = text();
        let m = mask(vec![1, 2]);
        assert_eq!(
            rule(&c, &[ids(vec![1, 2], vec![1, 100]), m.clone()]),
            ("token_id", "input_ids".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![1, 2], vec![-1, 1]), m.clone()]),
            ("token_id", "input_ids".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![1, 9], vec![1; 9]), mask(vec![1, 9])]),
            ("sequence", "input_ids".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![1, 3], vec![1; 3]), m.clone()]),
            ("sequence", "attention_mask".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![2, 2], vec![1; 4]), m.clone()]),
            ("rows", "attention_mask".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![0, 2], vec![]), mask(vec![0, 2])]),
            ("batch", "input_ids".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![1, 2], vec![1; 2])]),
            ("name", "attention_mask".into())
        );
        assert_eq!(
            rule(&c, &[ids(vec![1, 2], vec![1; 2]), m.clone(), m.clone()]),
            ("name", "attention_mask".into())
        );
        let f = NamedTensor::new(
            "input_ids",
            Tensor::new(vec![1, 2], TensorData::Fp32(vec![0.0; 2])).unwrap(),
        );
        assert_eq!(rule(&c, &[f, m.clone()]), ("datatype", "input_ids".into()));
        let big = c.clone().max_elements(3);
        assert_eq!(
            rule(&big, &[ids(vec![2, 2], vec![1; 4]), mask(vec![2, 2])]),
            ("elements", "input_ids".into())
        );
        let rows = c.max_rows(1);
        assert_eq!(
            rule(&rows, &[ids(vec![2, 2], vec![1; 4]), mask(vec![2, 2])]),
            ("batch", "input_ids".into())
        );
    }

    #[test]
    fn fixed_dimensions_are_exact() {
        let m = Manifest::parse(
            r#"{"name": "m", "version": "1", "kind": "classify", "file": "model.pt",
                "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 3, 4, 4]}],
                "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 2]}]}"#,
        )
        .unwrap();
        let c = Contract::from_manifest(&m, None);
        let x = |shape: Vec<usize>| {
            let n = shape.iter().product();
            NamedTensor::new(
                "x",
                Tensor::new(shape, TensorData::Fp32(vec![0.0; n])).unwrap(),
            )
        };
        assert_eq!(c.check(&[x(vec![2, 3, 4, 4])]), Ok(()));
        assert_eq!(rule(&c, &[x(vec![1, 3, 4, 5])]), ("shape", "x".into()));
        assert_eq!(rule(&c, &[x(vec![1, 3, 4])]), ("shape", "x".into()));
        assert_eq!(rule(&c, &[x(vec![0, 3, 4, 4])]), ("batch", "x".into()));
        assert!(c
            .check(&[x(vec![0, 3, 4, 4])])
            .unwrap_err()
            .to_string()
            .contains("at least 1 row"));
    }

    #[test]
    fn a_manifest_without_the_new_fields_falls_back() {
        let c = text();
        assert_eq!(c.max_positions, Some(8));
        assert_eq!(c.vocab_size, Some(100));
        let m = Manifest::parse(
            r#"{"name": "t", "version": "1", "kind": "embed", "file": "model.pt",
                "inputs": [{"name": "input_ids", "datatype": "INT64", "shape": [-1, -1]}],
                "outputs": [{"name": "e", "datatype": "FP32", "shape": [-1, 4]}],
                "preprocess": {"type": "text", "tokenizer": "t.json", "max_tokens": 8,
                               "max_positions": 512, "vocab_size": 30522}}"#,
        )
        .unwrap();
        let c = Contract::from_manifest(&m, Some(100));
        assert_eq!((c.max_positions, c.vocab_size), (Some(512), Some(30522)));
    }
}
