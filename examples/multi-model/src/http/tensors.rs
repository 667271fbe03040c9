//! Tensors as JSON for `POST /v1/models/{name}/infer` (the KServe v2 JSON
//! tensor form: name, datatype, shape, flat row-major data).
//! Shapes are checked against the data before anything is allocated.

use bytes::Bytes;
use example_tensor::{element_count, DataType, NamedTensor, Tensor, TensorData};
use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::ApiError;

/// One tensor in JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JsonTensor {
    /// Input or output name.
    pub name: String,
    /// KServe v2 datatype name (`FP32`, `INT64`, `BYTES`...).
    pub datatype: String,
    /// Dimensions; the first is the rows.
    pub shape: Vec<usize>,
    /// Elements, row-major, flat (BYTES as strings).
    pub data: Vec<Value>,
}

/// `POST /v1/models/{name}/infer` body.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TensorsRequest {
    /// The input tensors.
    pub inputs: Vec<JsonTensor>,
}

/// `POST /v1/models/{name}/infer` answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TensorsResponse {
    /// The deployment.
    pub model_name: String,
    /// The version that answered.
    pub model_version: String,
    /// The output tensors.
    pub outputs: Vec<JsonTensor>,
}

fn element<T>(
    name: &str,
    i: usize,
    v: &Value,
    f: impl FnOnce(&Value) -> Option<T>,
) -> Result<T, ApiError> {
    f(v).ok_or_else(|| ApiError::bad_request(format!("{name}: element {i} ({v}) does not fit")))
}

fn values<T>(t: &JsonTensor, f: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>, ApiError> {
    t.data
        .iter()
        .enumerate()
        .map(|(i, v)| element(&t.name, i, v, &f))
        .collect()
}

fn int<T: TryFrom<i64>>(v: &Value) -> Option<T> {
    v.as_i64().and_then(|x| T::try_from(x).ok())
}

impl JsonTensor {
    /// The host tensor, checked: a known datatype, a shape whose element
    /// count matches the data, elements that fit the datatype.
    pub fn decode(&self) -> Result<NamedTensor, ApiError> {
        let name = &self.name;
        let dt = DataType::parse(&self.datatype).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: unknown datatype {:?}", self.datatype))
        })?;
        let count = element_count(&self.shape).ok_or_else(|| {
            ApiError::bad_request(format!("{name}: shape {:?} overflows", self.shape))
        })?;
        if count != self.data.len() {
            return Err(ApiError::bad_request(format!(
                "{name}: shape {:?} holds {count} elements, data has {}",
                self.shape,
                self.data.len()
            )));
        }
        if self.shape.is_empty() {
            return Err(ApiError::bad_request(format!(
                "{name}: a tensor needs at least one dimension"
            )));
        }
        let data = match dt {
            DataType::Bool => TensorData::Bool(values(self, Value::as_bool)?),
            DataType::Uint8 => TensorData::Uint8(values(self, int)?),
            DataType::Uint16 => TensorData::Uint16(values(self, int)?),
            DataType::Uint32 => TensorData::Uint32(values(self, int)?),
            DataType::Uint64 => TensorData::Uint64(values(self, Value::as_u64)?),
            DataType::Int8 => TensorData::Int8(values(self, int)?),
            DataType::Int16 => TensorData::Int16(values(self, int)?),
            DataType::Int32 => TensorData::Int32(values(self, int)?),
            DataType::Int64 => TensorData::Int64(values(self, Value::as_i64)?),
            DataType::Fp16 => TensorData::Fp16(values(self, |v| v.as_f64().map(f16::from_f64))?),
            DataType::Fp32 => TensorData::Fp32(values(self, |v| v.as_f64().map(|x| x as f32))?),
            DataType::Fp64 => TensorData::Fp64(values(self, Value::as_f64)?),
            DataType::Bytes => TensorData::Bytes(values(self, |v| {
                v.as_str().map(|s| Bytes::copy_from_slice(s.as_bytes()))
            })?),
        };
        let tensor = Tensor::new(self.shape.clone(), data)
            .map_err(|e| ApiError::bad_request(format!("{name}: {e}")))?;
        Ok(NamedTensor::new(name.clone(), tensor))
    }

    /// The JSON form of `t`.
    pub fn encode(t: &NamedTensor) -> Self {
        fn json<T: Into<Value> + Copy>(v: &[T]) -> Vec<Value> {
            v.iter().map(|&x| x.into()).collect()
        }
        let data = match &t.tensor.data {
            TensorData::Bool(v) => json(v),
            TensorData::Uint8(v) => json(v),
            TensorData::Uint16(v) => json(v),
            TensorData::Uint32(v) => json(v),
            TensorData::Uint64(v) => json(v),
            TensorData::Int8(v) => json(v),
            TensorData::Int16(v) => json(v),
            TensorData::Int32(v) => json(v),
            TensorData::Int64(v) => json(v),
            TensorData::Fp16(v) => v.iter().map(|x| Value::from(x.to_f64())).collect(),
            TensorData::Fp32(v) => json(v),
            TensorData::Fp64(v) => json(v),
            TensorData::Bytes(v) => v
                .iter()
                .map(|b| Value::from(String::from_utf8_lossy(b).into_owned()))
                .collect(),
        };
        Self {
            name: t.name.clone(),
            datatype: t.tensor.datatype().as_str().to_string(),
            shape: t.tensor.shape.clone(),
            data,
        }
    }
}
