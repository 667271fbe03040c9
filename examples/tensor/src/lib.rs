//! Host tensors of every KServe v2 datatype.
//!
//! This is where the multi-model server's layers meet: the protocol layer
//! (`example-kserve`) decodes requests into [`NamedTensor`]s and never sees
//! tch; the model runtime (`example-models`) turns them into libtorch
//! tensors and never sees HTTP. A batch item is one request's named input
//! tensors, each with the request's rows as its leading dimension.
//!
//! ```
//! use example_tensor::{Tensor, TensorData};
//!
//! let a = Tensor::new(vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).unwrap();
//! let b = Tensor::new(vec![2, 2], TensorData::Fp32(vec![3.0, 4.0, 5.0, 6.0])).unwrap();
//! let batch = Tensor::concat_rows(&[a.clone(), b]).unwrap();
//! assert_eq!(batch.shape, vec![3, 2]);
//! let parts = batch.split_rows(&[1, 2]).unwrap();
//! assert_eq!(parts[0], a);
//! ```

use std::fmt;

pub use half::f16;

/// A KServe v2 tensor datatype.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DataType {
    /// `BOOL`
    Bool,
    /// `UINT8`
    Uint8,
    /// `UINT16`
    Uint16,
    /// `UINT32`
    Uint32,
    /// `UINT64`
    Uint64,
    /// `INT8`
    Int8,
    /// `INT16`
    Int16,
    /// `INT32`
    Int32,
    /// `INT64`
    Int64,
    /// `FP16`
    Fp16,
    /// `FP32`
    Fp32,
    /// `FP64`
    Fp64,
    /// `BYTES`: variable-length byte strings.
    Bytes,
}

impl DataType {
    /// Every datatype, in the protocol's order.
    pub const ALL: [DataType; 13] = [
        DataType::Bool,
        DataType::Uint8,
        DataType::Uint16,
        DataType::Uint32,
        DataType::Uint64,
        DataType::Int8,
        DataType::Int16,
        DataType::Int32,
        DataType::Int64,
        DataType::Fp16,
        DataType::Fp32,
        DataType::Fp64,
        DataType::Bytes,
    ];

    /// The protocol's name: `"FP32"`, `"BYTES"`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DataType::Bool => "BOOL",
            DataType::Uint8 => "UINT8",
            DataType::Uint16 => "UINT16",
            DataType::Uint32 => "UINT32",
            DataType::Uint64 => "UINT64",
            DataType::Int8 => "INT8",
            DataType::Int16 => "INT16",
            DataType::Int32 => "INT32",
            DataType::Int64 => "INT64",
            DataType::Fp16 => "FP16",
            DataType::Fp32 => "FP32",
            DataType::Fp64 => "FP64",
            DataType::Bytes => "BYTES",
        }
    }

    /// Parses the protocol's name (exact, upper case).
    pub fn parse(name: &str) -> Option<DataType> {
        DataType::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// Bytes per element in the binary tensor encoding; `None` for `BYTES`,
    /// whose elements carry their own 4-byte little-endian length.
    pub fn element_size(self) -> Option<usize> {
        Some(match self {
            DataType::Bool | DataType::Uint8 | DataType::Int8 => 1,
            DataType::Uint16 | DataType::Int16 | DataType::Fp16 => 2,
            DataType::Uint32 | DataType::Int32 | DataType::Fp32 => 4,
            DataType::Uint64 | DataType::Int64 | DataType::Fp64 => 8,
            DataType::Bytes => return None,
        })
    }
}

impl fmt::Display for DataType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The elements of a tensor, row-major, one variant per datatype.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    /// `BOOL`
    Bool(Vec<bool>),
    /// `UINT8`
    Uint8(Vec<u8>),
    /// `UINT16`
    Uint16(Vec<u16>),
    /// `UINT32`
    Uint32(Vec<u32>),
    /// `UINT64`
    Uint64(Vec<u64>),
    /// `INT8`
    Int8(Vec<i8>),
    /// `INT16`
    Int16(Vec<i16>),
    /// `INT32`
    Int32(Vec<i32>),
    /// `INT64`
    Int64(Vec<i64>),
    /// `FP16`
    Fp16(Vec<f16>),
    /// `FP32`
    Fp32(Vec<f32>),
    /// `FP64`
    Fp64(Vec<f64>),
    /// `BYTES`
    Bytes(Vec<bytes::Bytes>),
}

/// Applies `$body` to the vector inside any variant.
macro_rules! each {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            TensorData::Bool($v) => $body,
            TensorData::Uint8($v) => $body,
            TensorData::Uint16($v) => $body,
            TensorData::Uint32($v) => $body,
            TensorData::Uint64($v) => $body,
            TensorData::Int8($v) => $body,
            TensorData::Int16($v) => $body,
            TensorData::Int32($v) => $body,
            TensorData::Int64($v) => $body,
            TensorData::Fp16($v) => $body,
            TensorData::Fp32($v) => $body,
            TensorData::Fp64($v) => $body,
            TensorData::Bytes($v) => $body,
        }
    };
}

/// Rebuilds a variant of `$like` around `$body` (a vector of its type).
macro_rules! same {
    ($like:expr, $v:ident => $body:expr) => {
        match $like {
            TensorData::Bool($v) => TensorData::Bool($body),
            TensorData::Uint8($v) => TensorData::Uint8($body),
            TensorData::Uint16($v) => TensorData::Uint16($body),
            TensorData::Uint32($v) => TensorData::Uint32($body),
            TensorData::Uint64($v) => TensorData::Uint64($body),
            TensorData::Int8($v) => TensorData::Int8($body),
            TensorData::Int16($v) => TensorData::Int16($body),
            TensorData::Int32($v) => TensorData::Int32($body),
            TensorData::Int64($v) => TensorData::Int64($body),
            TensorData::Fp16($v) => TensorData::Fp16($body),
            TensorData::Fp32($v) => TensorData::Fp32($body),
            TensorData::Fp64($v) => TensorData::Fp64($body),
            TensorData::Bytes($v) => TensorData::Bytes($body),
        }
    };
}

impl TensorData {
    /// The datatype of the elements.
    pub fn datatype(&self) -> DataType {
        match self {
            TensorData::Bool(_) => DataType::Bool,
            TensorData::Uint8(_) => DataType::Uint8,
            TensorData::Uint16(_) => DataType::Uint16,
            TensorData::Uint32(_) => DataType::Uint32,
            TensorData::Uint64(_) => DataType::Uint64,
            TensorData::Int8(_) => DataType::Int8,
            TensorData::Int16(_) => DataType::Int16,
            TensorData::Int32(_) => DataType::Int32,
            TensorData::Int64(_) => DataType::Int64,
            TensorData::Fp16(_) => DataType::Fp16,
            TensorData::Fp32(_) => DataType::Fp32,
            TensorData::Fp64(_) => DataType::Fp64,
            TensorData::Bytes(_) => DataType::Bytes,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        each!(self, v => v.len())
    }

    /// Whether there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty vector of `datatype` with room for `capacity` elements.
    pub fn with_capacity(datatype: DataType, capacity: usize) -> TensorData {
        match datatype {
            DataType::Bool => TensorData::Bool(Vec::with_capacity(capacity)),
            DataType::Uint8 => TensorData::Uint8(Vec::with_capacity(capacity)),
            DataType::Uint16 => TensorData::Uint16(Vec::with_capacity(capacity)),
            DataType::Uint32 => TensorData::Uint32(Vec::with_capacity(capacity)),
            DataType::Uint64 => TensorData::Uint64(Vec::with_capacity(capacity)),
            DataType::Int8 => TensorData::Int8(Vec::with_capacity(capacity)),
            DataType::Int16 => TensorData::Int16(Vec::with_capacity(capacity)),
            DataType::Int32 => TensorData::Int32(Vec::with_capacity(capacity)),
            DataType::Int64 => TensorData::Int64(Vec::with_capacity(capacity)),
            DataType::Fp16 => TensorData::Fp16(Vec::with_capacity(capacity)),
            DataType::Fp32 => TensorData::Fp32(Vec::with_capacity(capacity)),
            DataType::Fp64 => TensorData::Fp64(Vec::with_capacity(capacity)),
            DataType::Bytes => TensorData::Bytes(Vec::with_capacity(capacity)),
        }
    }

    /// Appends `other`'s elements; `false` (and nothing appended) when the
    /// datatypes differ.
    fn extend_from(&mut self, other: &TensorData) -> bool {
        macro_rules! ext {
            ($($var:ident),*) => {
                match (self, other) {
                    $((TensorData::$var(a), TensorData::$var(b)) => {
                        a.extend_from_slice(b);
                        true
                    })*
                    _ => false,
                }
            };
        }
        ext!(
            Bool, Uint8, Uint16, Uint32, Uint64, Int8, Int16, Int32, Int64, Fp16, Fp32, Fp64, Bytes
        )
    }

    /// The elements `range` as a new vector of the same datatype.
    fn slice(&self, range: std::ops::Range<usize>) -> TensorData {
        same!(self, v => v[range.clone()].to_vec())
    }
}

/// Why a tensor could not be built, joined or split.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShapeError {
    message: String,
}

impl ShapeError {
    fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
        }
    }
}

impl fmt::Display for ShapeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ShapeError {}

/// The number of elements a shape holds, or `None` when it overflows
/// `usize` (so a hostile shape is refused before anything is allocated).
pub fn element_count(shape: &[usize]) -> Option<usize> {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

/// A host tensor: a shape and row-major elements whose count matches it.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Dimensions, outermost (rows) first.
    pub shape: Vec<usize>,
    /// The elements, row-major.
    pub data: TensorData,
}

impl Tensor {
    /// A tensor, if the shape's element count equals the data's length.
    pub fn new(shape: Vec<usize>, data: TensorData) -> Result<Tensor, ShapeError> {
        match element_count(&shape) {
            Some(n) if n == data.len() => Ok(Tensor { shape, data }),
            Some(n) => Err(ShapeError::new(format!(
                "shape {shape:?} holds {n} elements but {} were given",
                data.len()
            ))),
            None => Err(ShapeError::new(format!(
                "shape {shape:?} overflows the element count"
            ))),
        }
    }

    /// The datatype of the elements.
    pub fn datatype(&self) -> DataType {
        self.data.datatype()
    }

    /// The leading dimension (1 for a scalar).
    pub fn rows(&self) -> usize {
        self.shape.first().copied().unwrap_or(1)
    }

    /// Elements per row.
    fn row_len(&self) -> usize {
        element_count(self.shape.get(1..).unwrap_or(&[])).unwrap_or(0)
    }

    /// Joins tensors along the leading dimension. All must share datatype
    /// and the dimensions after the first; at least one is needed.
    pub fn concat_rows(parts: &[Tensor]) -> Result<Tensor, ShapeError> {
        let first = parts
            .first()
            .ok_or_else(|| ShapeError::new("no tensors to join"))?;
        if first.shape.is_empty() {
            return Err(ShapeError::new("a scalar has no rows to join"));
        }
        let tail = &first.shape[1..];
        let total = parts.iter().map(Tensor::rows).sum::<usize>();
        let mut data = TensorData::with_capacity(first.datatype(), first.row_len() * total);
        for part in parts {
            if part.shape.get(1..) != Some(tail) {
                return Err(ShapeError::new(format!(
                    "cannot join shapes {:?} and {:?}",
                    first.shape, part.shape
                )));
            }
            if !data.extend_from(&part.data) {
                return Err(ShapeError::new(format!(
                    "cannot join {} with {}",
                    first.datatype(),
                    part.datatype()
                )));
            }
        }
        let mut shape = first.shape.clone();
        shape[0] = total;
        Tensor::new(shape, data)
    }

    /// Splits along the leading dimension into parts of `rows[i]` rows.
    /// The counts must add up to [`Tensor::rows`].
    pub fn split_rows(self, rows: &[usize]) -> Result<Vec<Tensor>, ShapeError> {
        if self.shape.is_empty() || rows.iter().sum::<usize>() != self.rows() {
            return Err(ShapeError::new(format!(
                "cannot split shape {:?} into rows {rows:?}",
                self.shape
            )));
        }
        let row_len = self.row_len();
        let mut start = 0;
        let mut out = Vec::with_capacity(rows.len());
        for &n in rows {
            let mut shape = self.shape.clone();
            shape[0] = n;
            let end = start + n * row_len;
            out.push(Tensor {
                shape,
                data: self.data.slice(start..end),
            });
            start = end;
        }
        Ok(out)
    }
}

/// A tensor with the name of the model input or output it belongs to.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedTensor {
    /// The input or output name from the model's metadata.
    pub name: String,
    /// The tensor.
    pub tensor: Tensor,
}

impl NamedTensor {
    /// Names a tensor.
    pub fn new(name: impl Into<String>, tensor: Tensor) -> Self {
        Self {
            name: name.into(),
            tensor,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn datatype_names_round_trip() {
        for d in DataType::ALL {
            assert_eq!(DataType::parse(d.as_str()), Some(d));
        }
        assert_eq!(DataType::parse("fp32"), None);
        assert_eq!(DataType::parse("FLOAT"), None);
    }

    #[test]
    fn shape_must_match_data() {
        let err = Tensor::new(vec![2, 3], TensorData::Fp32(vec![0.0; 5])).unwrap_err();
        assert!(err.to_string().contains("holds 6 elements but 5"), "{err}");
        let huge = Tensor::new(vec![1 << 40, 1 << 40], TensorData::Uint8(vec![])).unwrap_err();
        assert!(huge.to_string().contains("overflows"), "{huge}");
    }

    #[test]
    fn concat_refuses_mismatches() {
        let a = Tensor::new(vec![1, 2], TensorData::Fp32(vec![1.0, 2.0])).unwrap();
        let b = Tensor::new(vec![1, 3], TensorData::Fp32(vec![1.0, 2.0, 3.0])).unwrap();
        let c = Tensor::new(vec![1, 2], TensorData::Int64(vec![1, 2])).unwrap();
        assert!(Tensor::concat_rows(&[a.clone(), b]).is_err());
        assert!(Tensor::concat_rows(&[a, c]).is_err());
        assert!(Tensor::concat_rows(&[]).is_err());
    }

    proptest! {
        #[test]
        fn split_undoes_concat(rows in proptest::collection::vec(0usize..5, 1..8), width in 0usize..4) {
            let parts: Vec<Tensor> = rows
                .iter()
                .enumerate()
                .map(|(i, &r)| {
                    let data = (0..r * width).map(|j| (i * 100 + j) as i64).collect();
                    Tensor::new(vec![r, width], TensorData::Int64(data)).unwrap()
                })
                .collect();
            let joined = Tensor::concat_rows(&parts).unwrap();
            prop_assert_eq!(joined.rows(), rows.iter().sum::<usize>());
            prop_assert_eq!(joined.split_rows(&rows).unwrap(), parts);
        }
    }
}
