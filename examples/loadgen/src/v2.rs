//! KServe v2 (Open Inference Protocol) requests: the inputs a run sends,
//! encoded as v2 JSON or with Triton's binary tensor data extension
//! (a JSON header of `Inference-Header-Content-Length` bytes, then the raw
//! tensors).

use std::fmt;
use std::str::FromStr;

use bytes::{BufMut, Bytes, BytesMut};
use example_tensor::DataType;
use hyper::header::{HeaderName, HeaderValue};
use rand::{rngs::StdRng, Rng, SeedableRng};
use serde_json::{json, Value};

use crate::payload::Payload;
use crate::LoadError;

/// Triton's binary extension header: the length of the JSON part.
pub const HEADER_CONTENT_LENGTH: &str = "inference-header-content-length";
/// Most elements one generated input may have (16 Mi).
pub const MAX_ELEMENTS: usize = 16 << 20;

/// How a v2 request travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// `POST /v2/models/{m}/infer` with tensors as JSON arrays.
    Json,
    /// `POST /v2/models/{m}/infer` with Triton's binary tensor data
    /// extension, for inputs and outputs.
    Binary,
    /// `inference.GRPCInferenceService/ModelInfer` with raw contents.
    Grpc,
}

impl FromStr for Encoding {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, LoadError> {
        match s {
            "json" => Ok(Self::Json),
            "binary" => Ok(Self::Binary),
            "grpc" => Ok(Self::Grpc),
            _ => Err(LoadError::new(format!(
                "unknown v2 encoding {s:?} (json, binary or grpc)"
            ))),
        }
    }
}

/// One input tensor of a v2 request: `NAME:DATATYPE:SHAPE`, e.g.
/// `INPUT0:FP32:1,16`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputSpec {
    /// Input name.
    pub name: String,
    /// v2 datatype.
    pub datatype: DataType,
    /// Shape (row-major); its product is the element count.
    pub shape: Vec<usize>,
}

impl InputSpec {
    /// Elements in the tensor.
    pub fn elements(&self) -> usize {
        self.shape.iter().product()
    }
}

impl FromStr for InputSpec {
    type Err = LoadError;

    fn from_str(s: &str) -> Result<Self, LoadError> {
        let bad = |why: &str| {
            LoadError::new(format!(
                "input {s:?}: {why} (NAME:DATATYPE:SHAPE, e.g. INPUT0:FP32:1,16)"
            ))
        };
        let mut parts = s.splitn(3, ':');
        let (Some(name), Some(dt), Some(shape)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad("three fields needed"));
        };
        if name.is_empty() {
            return Err(bad("empty name"));
        }
        let datatype = DataType::parse(dt).ok_or_else(|| bad("unknown datatype"))?;
        let shape = shape
            .split(',')
            .map(|d| d.trim().parse::<usize>().map_err(|_| bad("bad dimension")))
            .collect::<Result<Vec<_>, _>>()?;
        let elements = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .filter(|&n| n <= MAX_ELEMENTS)
            .ok_or_else(|| bad("more than 16 Mi elements"))?;
        if elements == 0 {
            return Err(bad("no elements"));
        }
        Ok(Self {
            name: name.to_owned(),
            datatype,
            shape,
        })
    }
}

impl fmt::Display for InputSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        write!(
            f,
            "{}:{}:{}",
            self.name,
            self.datatype.as_str(),
            dims.join(",")
        )
    }
}

/// Generated values of one input, kept as JSON values and as their
/// little-endian raw bytes (v2 binary / gRPC raw contents).
#[derive(Debug, Clone)]
pub struct InputData {
    /// The input.
    pub spec: InputSpec,
    /// Row-major elements as JSON (BYTES elements as strings).
    pub json: Vec<Value>,
    /// The raw bytes (BYTES elements each as a 4-byte little-endian length
    /// and the bytes).
    pub raw: Bytes,
}

/// Seeded values for `spec`: integers in small ranges, floats in
/// `[-1, 1)`, BYTES elements from `bytes_elements` in turn (or 16 random
/// letters when none are given).
pub fn generate(spec: &InputSpec, seed: u64, bytes_elements: &[Bytes]) -> InputData {
    let mut rng = StdRng::seed_from_u64(seed);
    let n = spec.elements();
    let mut json = Vec::with_capacity(n);
    let mut raw = BytesMut::with_capacity(n * spec.datatype.element_size().unwrap_or(20));
    for i in 0..n {
        match spec.datatype {
            DataType::Bool => {
                let v: bool = rng.random();
                raw.put_u8(u8::from(v));
                json.push(json!(v));
            }
            DataType::Uint8 => put_int(&mut raw, &mut json, rng.random_range(0..=255u8)),
            DataType::Uint16 => put_int(&mut raw, &mut json, rng.random_range(0..1000u16)),
            DataType::Uint32 => put_int(&mut raw, &mut json, rng.random_range(0..1000u32)),
            DataType::Uint64 => put_int(&mut raw, &mut json, rng.random_range(0..1000u64)),
            DataType::Int8 => put_int(&mut raw, &mut json, rng.random_range(-100..100i8)),
            DataType::Int16 => put_int(&mut raw, &mut json, rng.random_range(-1000..1000i16)),
            DataType::Int32 => put_int(&mut raw, &mut json, rng.random_range(-1000..1000i32)),
            DataType::Int64 => put_int(&mut raw, &mut json, rng.random_range(-1000..1000i64)),
            DataType::Fp16 => {
                let v = half::f16::from_f32(rng.random_range(-1.0..1.0f32));
                raw.put_u16_le(v.to_bits());
                json.push(json!(v.to_f32()));
            }
            DataType::Fp32 => {
                let v = rng.random_range(-1.0..1.0f32);
                raw.put_f32_le(v);
                json.push(json!(v));
            }
            DataType::Fp64 => {
                let v = rng.random_range(-1.0..1.0f64);
                raw.put_f64_le(v);
                json.push(json!(v));
            }
            DataType::Bytes => {
                let v = match bytes_elements {
                    [] => Bytes::from(
                        (0..16)
                            .map(|_| rng.random_range(b'a'..=b'z'))
                            .collect::<Vec<u8>>(),
                    ),
                    given => given[i % given.len()].clone(),
                };
                raw.put_u32_le(u32::try_from(v.len()).unwrap_or(u32::MAX));
                raw.put_slice(&v);
                json.push(json!(String::from_utf8_lossy(&v)));
            }
        }
    }
    InputData {
        spec: spec.clone(),
        json,
        raw: raw.freeze(),
    }
}

trait LeBytes: Copy + Into<Value> {
    fn put(self, buf: &mut BytesMut);
}

macro_rules! le_bytes {
    ($($t:ty => $put:ident),*) => {$(
        impl LeBytes for $t {
            fn put(self, buf: &mut BytesMut) {
                buf.$put(self);
            }
        }
    )*};
}
le_bytes!(u8 => put_u8, u16 => put_u16_le, u32 => put_u32_le, u64 => put_u64_le,
    i8 => put_i8, i16 => put_i16_le, i32 => put_i32_le, i64 => put_i64_le);

fn put_int<T: LeBytes>(raw: &mut BytesMut, json: &mut Vec<Value>, v: T) {
    v.put(raw);
    json.push(v.into());
}

/// A `POST /v2/models/{m}/infer` body for `inputs` in `encoding` (JSON or
/// binary; gRPC requests are not REST bodies).
pub fn rest_payload(inputs: &[InputData], encoding: Encoding) -> Result<Payload, LoadError> {
    let tensor = |d: &InputData| {
        json!({
            "name": d.spec.name,
            "datatype": d.spec.datatype.as_str(),
            "shape": d.spec.shape,
        })
    };
    match encoding {
        Encoding::Json => {
            let inputs: Vec<Value> = inputs
                .iter()
                .map(|d| {
                    let mut t = tensor(d);
                    t["data"] = Value::Array(d.json.clone());
                    t
                })
                .collect();
            let body = serde_json::to_vec(&json!({ "inputs": inputs }))
                .map_err(|e| LoadError::new(e.to_string()))?;
            Ok(Payload::json(body))
        }
        Encoding::Binary => {
            let described: Vec<Value> = inputs
                .iter()
                .map(|d| {
                    let mut t = tensor(d);
                    t["parameters"] = json!({ "binary_data_size": d.raw.len() });
                    t
                })
                .collect();
            let header = serde_json::to_vec(&json!({
                "inputs": described,
                "parameters": { "binary_data_output": true },
            }))
            .map_err(|e| LoadError::new(e.to_string()))?;
            let mut body = BytesMut::with_capacity(
                header.len() + inputs.iter().map(|d| d.raw.len()).sum::<usize>(),
            );
            body.put_slice(&header);
            for d in inputs {
                body.put_slice(&d.raw);
            }
            let mut payload = Payload::new(body.freeze(), "application/octet-stream");
            payload.headers.push((
                HeaderName::from_static(HEADER_CONTENT_LENGTH),
                HeaderValue::from(header.len()),
            ));
            Ok(payload)
        }
        Encoding::Grpc => Err(LoadError::new("gRPC requests are not REST bodies")),
    }
}

/// The path of a model's v2 infer endpoint.
pub fn infer_path(model: &str, version: Option<&str>) -> String {
    match version {
        Some(v) => format!("/v2/models/{model}/versions/{v}/infer"),
        None => format!("/v2/models/{model}/infer"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints_input_specs() {
        let spec: InputSpec = "INPUT0:FP32:2,8".parse().unwrap();
        assert_eq!(spec.datatype, DataType::Fp32);
        assert_eq!(spec.shape, vec![2, 8]);
        assert_eq!(spec.elements(), 16);
        assert_eq!(spec.to_string(), "INPUT0:FP32:2,8");
        for bad in [
            "x",
            "x:FP32",
            ":FP32:1",
            "x:FLOAT:1",
            "x:FP32:1,a",
            "x:FP32:0",
            "x:FP32:100000,100000,100000",
            "x:FP32:18446744073709551615,2",
        ] {
            assert!(bad.parse::<InputSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn json_and_raw_agree_for_every_datatype() {
        for dt in [
            "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
            "FP16", "FP32", "FP64",
        ] {
            let spec: InputSpec = format!("x:{dt}:3,2").parse().unwrap();
            let d = generate(&spec, 5, &[]);
            assert_eq!(d.json.len(), 6, "{dt}");
            assert_eq!(
                d.raw.len(),
                6 * spec.datatype.element_size().unwrap(),
                "{dt}"
            );
            // Seeded: the same seed gives the same data.
            assert_eq!(d.raw, generate(&spec, 5, &[]).raw, "{dt}");
        }
        let spec: InputSpec = "x:FP32:1".parse().unwrap();
        let d = generate(&spec, 1, &[]);
        let v = d.json[0].as_f64().unwrap() as f32;
        assert_eq!(d.raw[..], v.to_le_bytes());
    }

    #[test]
    fn bytes_elements_are_length_prefixed() {
        let spec: InputSpec = "TEXT:BYTES:3".parse().unwrap();
        let d = generate(
            &spec,
            1,
            &[Bytes::from_static(b"ab"), Bytes::from_static(b"cde")],
        );
        assert_eq!(&d.raw[..], b"\x02\0\0\0ab\x03\0\0\0cde\x02\0\0\0ab");
        assert_eq!(d.json, vec![json!("ab"), json!("cde"), json!("ab")]);
    }

    #[test]
    fn binary_body_is_header_then_tensors() {
        let spec: InputSpec = "INPUT0:INT32:1,4".parse().unwrap();
        let d = generate(&spec, 3, &[]);
        let p = rest_payload(std::slice::from_ref(&d), Encoding::Binary).unwrap();
        let (name, value) = &p.headers[0];
        assert_eq!(name, HEADER_CONTENT_LENGTH);
        let header_len: usize = value.to_str().unwrap().parse().unwrap();
        let header: Value = serde_json::from_slice(&p.body[..header_len]).unwrap();
        assert_eq!(header["inputs"][0]["parameters"]["binary_data_size"], 16);
        assert_eq!(header["inputs"][0]["shape"], json!([1, 4]));
        assert!(header["inputs"][0].get("data").is_none());
        assert_eq!(&p.body[header_len..], &d.raw[..]);

        let j = rest_payload(&[d], Encoding::Json).unwrap();
        let v: Value = serde_json::from_slice(&j.body).unwrap();
        assert_eq!(v["inputs"][0]["data"].as_array().unwrap().len(), 4);
        assert_eq!(v["inputs"][0]["datatype"], "INT32");
    }
}
