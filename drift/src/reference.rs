//! The reference a deployment's live traffic is compared with: per column,
//! a sample of the training or validation data's values.
//!
//! On disk it is JSON:
//!
//! ```json
//! {"columns": [
//!   {"name": "brightness", "kind": "numerical", "values": [0.41, 0.52, 0.47]},
//!   {"name": "class", "kind": "categorical", "values": ["cat", "dog", "cat"]}
//! ]}
//! ```

use std::collections::HashSet;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::stats::{clean, ColumnKind, ColumnValues};

/// Largest reference file read (bytes).
pub const MAX_REFERENCE_BYTES: u64 = 256 << 20;

/// One reference column.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReferenceColumn {
    /// The column's name.
    pub name: String,
    /// Numbers or labels.
    pub kind: ColumnKind,
    /// The reference values.
    pub values: ColumnValues,
}

/// The reference: the columns a deployment's feature extractor produces, in
/// its order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Reference {
    /// The columns.
    pub columns: Vec<ReferenceColumn>,
}

/// Why a reference cannot be used.
#[derive(Debug)]
pub enum ReferenceError {
    /// The file cannot be read.
    Io(std::io::Error),
    /// The file is larger than [`MAX_REFERENCE_BYTES`].
    TooLarge(u64),
    /// The file is not a reference.
    Json(serde_json::Error),
    /// The reference is inconsistent.
    Invalid(String),
}

impl fmt::Display for ReferenceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReferenceError::Io(e) => write!(f, "{e}"),
            ReferenceError::TooLarge(n) => {
                write!(f, "{n} bytes, more than the {MAX_REFERENCE_BYTES} allowed")
            }
            ReferenceError::Json(e) => write!(f, "not a reference: {e}"),
            ReferenceError::Invalid(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for ReferenceError {}

impl Reference {
    /// Reads and checks a reference file.
    pub fn load(path: &Path) -> Result<Reference, ReferenceError> {
        let len = std::fs::metadata(path).map_err(ReferenceError::Io)?.len();
        if len > MAX_REFERENCE_BYTES {
            return Err(ReferenceError::TooLarge(len));
        }
        let bytes = std::fs::read(path).map_err(ReferenceError::Io)?;
        let reference: Reference = serde_json::from_slice(&bytes).map_err(ReferenceError::Json)?;
        reference.checked()
    }

    /// Checks the columns (at least one, unique names, values of the declared
    /// kind, at least one finite value each) and drops non-finite values.
    pub fn checked(mut self) -> Result<Reference, ReferenceError> {
        if self.columns.is_empty() {
            return Err(ReferenceError::Invalid("no columns".into()));
        }
        let mut seen = HashSet::new();
        for col in &mut self.columns {
            if !seen.insert(col.name.clone()) {
                return Err(ReferenceError::Invalid(format!(
                    "column {:?} appears twice",
                    col.name
                )));
            }
            // Labels are strings: a categorical column of numbers is refused.
            if col.kind != col.values.kind() && !col.values.is_empty() {
                return Err(ReferenceError::Invalid(format!(
                    "column {:?} is declared {} but holds {} values",
                    col.name,
                    col.kind,
                    col.values.kind()
                )));
            }
            col.values = clean(&col.values);
            if col.values.is_empty() {
                return Err(ReferenceError::Invalid(format!(
                    "column {:?} has no finite values",
                    col.name
                )));
            }
        }
        Ok(self)
    }

    /// The column of this name.
    pub fn column(&self, name: &str) -> Option<&ReferenceColumn> {
        self.columns.iter().find(|c| c.name == name)
    }

    /// The column names in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.columns.iter().map(|c| c.name.as_str())
    }
}
