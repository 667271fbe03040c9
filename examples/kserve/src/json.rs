//! The REST body: v2 request and response JSON, with Triton's binary tensor
//! data extension.
//!
//! Tensor data is parsed straight into typed vectors (one serde visitor per
//! datatype, nested or flat arrays alike), never through
//! `serde_json::Value`, and the shape's element count is checked against
//! [`Limits`] and the body's size before anything is reserved.

use bytes::Bytes;
use example_tensor::{element_count, f16, DataType, NamedTensor, Tensor, TensorData};
use serde::de::{self, DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use crate::infer::Answer;
use crate::openapi::{datatype_schema, tensor_data_schema};
use crate::{raw, Error, InferRequest, Limits, Parameters, RequestedOutput};

/// [`RequestBody`] as the OpenAPI document names it.
pub(crate) type InferenceRequest = RequestBody<'static>;

/// [`ResponseBody`] as the OpenAPI document names it.
pub(crate) type InferenceResponse = ResponseBody<'static>;

/// The v2 JSON of an inference request.
#[derive(Deserialize, ToSchema)]
#[schema(as = InferenceRequest)]
pub(crate) struct RequestBody<'a> {
    /// Echoed in the response.
    #[serde(default)]
    id: Option<String>,
    /// Request parameters, e.g. Triton's `binary_data_output` or `timeout`
    /// (microseconds).
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Parameters,
    /// The input tensors.
    #[serde(borrow)]
    inputs: Vec<InputBody<'a>>,
    /// The outputs wanted; none means all.
    #[serde(default)]
    outputs: Vec<OutputBody>,
}

/// An input tensor of a request.
#[derive(Deserialize, ToSchema)]
#[schema(as = RequestInput)]
struct InputBody<'a> {
    /// Input name.
    name: String,
    /// Dimensions.
    shape: Vec<i64>,
    #[schema(schema_with = datatype_schema)]
    datatype: String,
    /// `binary_data_size` (bytes) when the data follows the JSON part.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Parameters,
    #[serde(borrow, default)]
    #[schema(schema_with = tensor_data_schema)]
    data: Option<&'a RawValue>,
}

/// An output a request asks for.
#[derive(Deserialize, ToSchema)]
#[schema(as = RequestOutput)]
struct OutputBody {
    /// Output name.
    name: String,
    /// `binary_data: true` to get it as binary after the JSON part.
    #[serde(default)]
    #[schema(value_type = Object)]
    parameters: Parameters,
}

/// The dimensions of a request tensor, refused when negative, when their
/// product overflows, or when it passes `limits.max_elements`.
pub(crate) fn checked_shape(
    name: &str,
    shape: &[i64],
    limits: &Limits,
) -> Result<(Vec<usize>, usize), Error> {
    let dims = shape
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<usize>, _>>()
        .map_err(|_| {
            Error::bad_request(format!(
                "input {name:?}: shape {shape:?} has a negative dimension"
            ))
        })?;
    let count = element_count(&dims).ok_or_else(|| {
        Error::bad_request(format!(
            "input {name:?}: shape {shape:?} overflows the element count"
        ))
    })?;
    if count > limits.max_elements {
        return Err(Error::payload_too_large(format!(
            "input {name:?}: shape {shape:?} holds {count} elements, over the limit of {}",
            limits.max_elements
        )));
    }
    Ok((dims, count))
}

/// Decodes a request: `json` is the JSON header, `binary` the bytes after
/// it (empty without the binary extension).
pub(crate) fn decode_request(
    json: &[u8],
    binary: Bytes,
    limits: &Limits,
) -> Result<InferRequest, Error> {
    let body: RequestBody<'_> = serde_json::from_slice(json)
        .map_err(|e| Error::bad_request(format!("malformed request JSON: {e}")))?;
    let mut inputs = Vec::with_capacity(body.inputs.len());
    let mut offset = 0usize;
    for input in body.inputs {
        let datatype = DataType::parse(&input.datatype).ok_or_else(|| {
            Error::bad_request(format!(
                "input {:?}: unknown datatype {:?}",
                input.name, input.datatype
            ))
        })?;
        let (shape, count) = checked_shape(&input.name, &input.shape, limits)?;
        let data = match binary_size(&input.name, &input.parameters)? {
            Some(size) => {
                let end = offset
                    .checked_add(size)
                    .filter(|&end| end <= binary.len())
                    .ok_or_else(|| {
                        Error::bad_request(format!(
                            "input {:?}: binary_data_size {size} is past the end of the body \
                             ({} binary bytes, {offset} used)",
                            input.name,
                            binary.len()
                        ))
                    })?;
                let part = binary.slice(offset..end);
                offset = end;
                raw::decode(&input.name, datatype, count, part)?
            }
            None => {
                let raw = input.data.ok_or_else(|| {
                    Error::bad_request(format!("input {:?} has no data", input.name))
                })?;
                parse_data(&input.name, datatype, count, raw.get())?
            }
        };
        if data.len() != count {
            return Err(Error::bad_request(format!(
                "input {:?}: shape {shape:?} holds {count} elements but {} were given",
                input.name,
                data.len()
            )));
        }
        let tensor = Tensor::new(shape, data).map_err(|e| Error::bad_request(e.to_string()))?;
        inputs.push(NamedTensor::new(input.name, tensor));
    }
    if offset != binary.len() {
        return Err(Error::bad_request(format!(
            "{} binary bytes after the inputs' binary_data_size",
            binary.len() - offset
        )));
    }
    Ok(InferRequest {
        id: body.id,
        parameters: body.parameters,
        inputs,
        outputs: body
            .outputs
            .into_iter()
            .map(|o| RequestedOutput {
                name: o.name,
                parameters: o.parameters,
            })
            .collect(),
        deadline: None,
    })
}

fn binary_size(name: &str, parameters: &Parameters) -> Result<Option<usize>, Error> {
    match parameters.get("binary_data_size") {
        None => Ok(None),
        Some(v) => v
            .as_u64()
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| {
                Error::bad_request(format!(
                    "input {name:?}: binary_data_size must be a non-negative integer, not {v}"
                ))
            }),
    }
}

/// Parses a JSON `data` array (nested or flat) of `count` elements.
fn parse_data(
    name: &str,
    datatype: DataType,
    count: usize,
    text: &str,
) -> Result<TensorData, Error> {
    // Every element takes at least one character and a separator: a shape
    // the text cannot hold is refused before reserving room for it.
    if count > text.len() / 2 + 1 {
        return Err(Error::bad_request(format!(
            "input {name:?}: data cannot hold the {count} elements of its shape"
        )));
    }
    fn parse<T: Elem>(count: usize, text: &str) -> Result<Vec<T>, serde_json::Error> {
        let mut out = Vec::with_capacity(count);
        let mut de = serde_json::Deserializer::from_str(text);
        Flat {
            out: &mut out,
            max: count,
        }
        .deserialize(&mut de)?;
        de.end()?;
        Ok(out)
    }
    let parsed = match datatype {
        DataType::Bool => parse(count, text).map(TensorData::Bool),
        DataType::Uint8 => parse(count, text).map(TensorData::Uint8),
        DataType::Uint16 => parse(count, text).map(TensorData::Uint16),
        DataType::Uint32 => parse(count, text).map(TensorData::Uint32),
        DataType::Uint64 => parse(count, text).map(TensorData::Uint64),
        DataType::Int8 => parse(count, text).map(TensorData::Int8),
        DataType::Int16 => parse(count, text).map(TensorData::Int16),
        DataType::Int32 => parse(count, text).map(TensorData::Int32),
        DataType::Int64 => parse(count, text).map(TensorData::Int64),
        DataType::Fp16 => parse(count, text).map(TensorData::Fp16),
        DataType::Fp32 => parse(count, text).map(TensorData::Fp32),
        DataType::Fp64 => parse(count, text).map(TensorData::Fp64),
        DataType::Bytes => parse(count, text).map(TensorData::Bytes),
    };
    parsed.map_err(|e| Error::bad_request(format!("input {name:?}: {datatype} data: {e}")))
}

/// An element type JSON data can be parsed into.
trait Elem: Sized {
    const EXPECTED: &'static str;
    fn from_bool(_: bool) -> Option<Self> {
        None
    }
    fn from_u64(_: u64) -> Option<Self> {
        None
    }
    fn from_i64(_: i64) -> Option<Self> {
        None
    }
    fn from_f64(_: f64) -> Option<Self> {
        None
    }
    fn from_str(_: &str) -> Option<Self> {
        None
    }
}

impl Elem for bool {
    const EXPECTED: &'static str = "a boolean";
    fn from_bool(v: bool) -> Option<Self> {
        Some(v)
    }
}

macro_rules! int_elem {
    ($($t:ty),*) => {$(
        impl Elem for $t {
            const EXPECTED: &'static str = concat!("an integer in the range of ", stringify!($t));
            fn from_u64(v: u64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
            fn from_i64(v: i64) -> Option<Self> {
                <$t>::try_from(v).ok()
            }
        }
    )*};
}
int_elem!(u8, u16, u32, u64, i8, i16, i32, i64);

// A number beyond the type's range would become infinity, which the JSON
// answer cannot carry: refused like an integer out of range.
macro_rules! float_elem {
    ($($t:ty => $from:expr),*) => {$(
        impl Elem for $t {
            const EXPECTED: &'static str = concat!("a number in the range of ", stringify!($t));
            fn from_u64(v: u64) -> Option<Self> {
                <Self as Elem>::from_f64(v as f64)
            }
            fn from_i64(v: i64) -> Option<Self> {
                <Self as Elem>::from_f64(v as f64)
            }
            fn from_f64(v: f64) -> Option<Self> {
                Some($from(v)).filter(|x: &$t| x.is_finite())
            }
        }
    )*};
}
float_elem!(f16 => f16::from_f64, f32 => |v: f64| v as f32, f64 => |v: f64| v);

impl Elem for Bytes {
    const EXPECTED: &'static str = "a string";
    fn from_str(v: &str) -> Option<Self> {
        Some(Bytes::copy_from_slice(v.as_bytes()))
    }
}

/// Appends the elements of a (possibly nested) array to `out`, at most
/// `max` of them.
struct Flat<'v, T> {
    out: &'v mut Vec<T>,
    max: usize,
}

impl<T: Elem> Flat<'_, T> {
    fn push<E: de::Error>(self, v: Option<T>, unexpected: de::Unexpected<'_>) -> Result<(), E> {
        let v = v.ok_or_else(|| E::invalid_value(unexpected, &T::EXPECTED))?;
        if self.out.len() == self.max {
            return Err(E::custom(format!(
                "more elements than the shape's {}",
                self.max
            )));
        }
        self.out.push(v);
        Ok(())
    }
}

impl<'de, T: Elem> DeserializeSeed<'de> for Flat<'_, T> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de, T: Elem> Visitor<'de> for Flat<'_, T> {
    type Value = ();

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} or an array of them", T::EXPECTED)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let max = self.max;
        while seq
            .next_element_seed(Flat {
                out: &mut *self.out,
                max,
            })?
            .is_some()
        {}
        Ok(())
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<(), E> {
        self.push(T::from_bool(v), de::Unexpected::Bool(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.push(T::from_u64(v), de::Unexpected::Unsigned(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.push(T::from_i64(v), de::Unexpected::Signed(v))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.push(T::from_f64(v), de::Unexpected::Float(v))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<(), E> {
        self.push(T::from_str(v), de::Unexpected::Str(v))
    }
}

/// Whether an output goes in binary: its own `binary_data` parameter, else
/// the request's `binary_data_output`.
fn wants_binary(own: Option<&Parameters>, request: &Parameters) -> bool {
    own.and_then(|p| p.get("binary_data"))
        .or_else(|| request.get("binary_data_output"))
        .and_then(serde_json::Value::as_bool)
        .unwrap_or(false)
}

/// An encoded response: the body and, with binary outputs, the length of
/// its JSON header.
#[derive(Debug)]
pub(crate) struct EncodedResponse {
    pub(crate) body: Vec<u8>,
    pub(crate) header_len: Option<usize>,
}

/// The v2 JSON of an inference answer.
#[derive(Serialize, ToSchema)]
#[schema(as = InferenceResponse)]
pub(crate) struct ResponseBody<'a> {
    /// The model that answered.
    model_name: &'a str,
    /// Its version.
    #[serde(skip_serializing_if = "Option::is_none")]
    model_version: Option<&'a str>,
    /// The request's id.
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    /// Response parameters.
    #[serde(skip_serializing_if = "serde_json::Map::is_empty")]
    #[schema(value_type = Object)]
    parameters: &'a Parameters,
    /// The output tensors.
    outputs: Vec<OutputOut<'a>>,
}

/// An output tensor of an answer.
#[derive(Serialize, ToSchema)]
#[schema(as = ResponseOutput)]
struct OutputOut<'a> {
    /// Output name.
    name: &'a str,
    #[schema(schema_with = datatype_schema)]
    datatype: &'static str,
    /// Dimensions.
    #[schema(value_type = Vec<usize>)]
    shape: &'a [usize],
    /// `binary_data_size` when the data follows the JSON part.
    #[serde(skip_serializing_if = "Option::is_none")]
    parameters: Option<BinarySize>,
    /// Absent when the data follows the JSON part.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(schema_with = tensor_data_schema)]
    data: Option<DataOut<'a>>,
}

/// The size of an output's binary data after the JSON part.
#[derive(Serialize, ToSchema)]
struct BinarySize {
    /// Bytes.
    binary_data_size: usize,
}

struct DataOut<'a>(&'a TensorData);

impl Serialize for DataOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.0 {
            TensorData::Bool(v) => v.serialize(s),
            TensorData::Uint8(v) => v.serialize(s),
            TensorData::Uint16(v) => v.serialize(s),
            TensorData::Uint32(v) => v.serialize(s),
            TensorData::Uint64(v) => v.serialize(s),
            TensorData::Int8(v) => v.serialize(s),
            TensorData::Int16(v) => v.serialize(s),
            TensorData::Int32(v) => v.serialize(s),
            TensorData::Int64(v) => v.serialize(s),
            TensorData::Fp16(v) => s.collect_seq(v.iter().map(|x| x.to_f32())),
            TensorData::Fp32(v) => v.serialize(s),
            TensorData::Fp64(v) => v.serialize(s),
            TensorData::Bytes(v) => s.collect_seq(v.iter().map(|b| String::from_utf8_lossy(b))),
        }
    }
}

/// Encodes an answer as v2 JSON, outputs asked for in binary appended after
/// the JSON header.
pub(crate) fn encode_response(answer: &Answer) -> Result<EncodedResponse, Error> {
    let response = &answer.response;
    let mut binary: Vec<&TensorData> = Vec::new();
    let outputs = response
        .outputs
        .iter()
        .enumerate()
        .map(|(i, out)| {
            let own = answer.requested.get(i).map(|r| &r.parameters);
            if wants_binary(own, &answer.request_parameters) {
                binary.push(&out.tensor.data);
                OutputOut {
                    name: &out.name,
                    datatype: out.tensor.datatype().as_str(),
                    shape: &out.tensor.shape,
                    parameters: Some(BinarySize {
                        binary_data_size: raw::encoded_len(&out.tensor.data),
                    }),
                    data: None,
                }
            } else {
                OutputOut {
                    name: &out.name,
                    datatype: out.tensor.datatype().as_str(),
                    shape: &out.tensor.shape,
                    parameters: None,
                    data: Some(DataOut(&out.tensor.data)),
                }
            }
        })
        .collect();
    let body = ResponseBody {
        model_name: &response.model_name,
        model_version: response.model_version.as_deref(),
        id: response.id.as_deref(),
        parameters: &response.parameters,
        outputs,
    };
    let mut out = Vec::with_capacity(256);
    serde_json::to_writer(&mut out, &body)
        .map_err(|e| Error::internal(format!("cannot encode the response: {e}")))?;
    if binary.is_empty() {
        return Ok(EncodedResponse {
            body: out,
            header_len: None,
        });
    }
    let header_len = out.len();
    for data in binary {
        raw::encode(data, &mut out);
    }
    Ok(EncodedResponse {
        body: out,
        header_len: Some(header_len),
    })
}
