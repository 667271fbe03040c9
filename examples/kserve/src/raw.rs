//! Raw tensor bytes: little-endian elements, row-major, and `BYTES` elements
//! each behind a 4-byte little-endian length. Triton's binary tensor data
//! extension (REST) and gRPC's `raw_input_contents` /
//! `raw_output_contents` both use it.

use bytes::{Buf, Bytes};
use example_tensor::{f16, DataType, TensorData};

use crate::Error;

/// Decodes `count` elements of `datatype` from `raw`, which must hold
/// exactly them. `name` is the tensor's, for messages.
pub(crate) fn decode(
    name: &str,
    datatype: DataType,
    count: usize,
    raw: Bytes,
) -> Result<TensorData, Error> {
    let Some(size) = datatype.element_size() else {
        return decode_bytes(name, count, raw);
    };
    let want = count.checked_mul(size);
    if want != Some(raw.len()) {
        return Err(Error::bad_request(format!(
            "input {name:?}: {count} {datatype} elements need {} bytes, {} given",
            want.map_or_else(|| "more than usize::MAX".to_owned(), |n| n.to_string()),
            raw.len()
        )));
    }
    macro_rules! le {
        ($variant:ident, $t:ty) => {
            TensorData::$variant(
                raw.chunks_exact(size)
                    .map(|c| <$t>::from_le_bytes(c.try_into().expect("chunk of the element size")))
                    .collect(),
            )
        };
    }
    Ok(match datatype {
        DataType::Bool => TensorData::Bool(raw.iter().map(|&b| b != 0).collect()),
        DataType::Uint8 => TensorData::Uint8(raw.to_vec()),
        DataType::Int8 => TensorData::Int8(raw.iter().map(|&b| b as i8).collect()),
        DataType::Uint16 => le!(Uint16, u16),
        DataType::Uint32 => le!(Uint32, u32),
        DataType::Uint64 => le!(Uint64, u64),
        DataType::Int16 => le!(Int16, i16),
        DataType::Int32 => le!(Int32, i32),
        DataType::Int64 => le!(Int64, i64),
        DataType::Fp16 => le!(Fp16, f16),
        DataType::Fp32 => le!(Fp32, f32),
        DataType::Fp64 => le!(Fp64, f64),
        DataType::Bytes => unreachable!("BYTES has no element size"),
    })
}

fn decode_bytes(name: &str, count: usize, mut raw: Bytes) -> Result<TensorData, Error> {
    // Each element takes at least its 4-byte length: a count the bytes
    // cannot hold is refused before reserving room for it.
    if count > raw.len() / 4 {
        return Err(Error::bad_request(format!(
            "input {name:?}: {count} BYTES elements cannot fit in {} bytes",
            raw.len()
        )));
    }
    let mut out = Vec::with_capacity(count);
    for i in 0..count {
        if raw.remaining() < 4 {
            return Err(Error::bad_request(format!(
                "input {name:?}: BYTES element {i} has no 4-byte length"
            )));
        }
        let len = raw.get_u32_le() as usize;
        if len > raw.remaining() {
            return Err(Error::bad_request(format!(
                "input {name:?}: BYTES element {i} claims {len} bytes but only {} remain",
                raw.remaining()
            )));
        }
        out.push(raw.split_to(len));
    }
    if !raw.is_empty() {
        return Err(Error::bad_request(format!(
            "input {name:?}: {} bytes left after {count} BYTES elements",
            raw.len()
        )));
    }
    Ok(TensorData::Bytes(out))
}

/// The encoded size of `data` in bytes.
pub(crate) fn encoded_len(data: &TensorData) -> usize {
    match data {
        TensorData::Bytes(v) => v.iter().map(|b| 4 + b.len()).sum(),
        other => other.len() * other.datatype().element_size().unwrap_or(0),
    }
}

/// Appends `data`'s raw encoding to `out`.
pub(crate) fn encode(data: &TensorData, out: &mut Vec<u8>) {
    out.reserve(encoded_len(data));
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Int8(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int16(v) => le!(v),
        TensorData::Int32(v) => le!(v),
        TensorData::Int64(v) => le!(v),
        TensorData::Fp16(v) => le!(v),
        TensorData::Fp32(v) => le!(v),
        TensorData::Fp64(v) => le!(v),
        TensorData::Bytes(v) => {
            for b in v {
                out.extend_from_slice(&(b.len() as u32).to_le_bytes());
                out.extend_from_slice(b);
            }
        }
    }
}
