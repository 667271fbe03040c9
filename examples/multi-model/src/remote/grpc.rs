//! KServe v2 gRPC at a front built from its configuration: each call
//! routed by the model its request message names, like REST by its path.
//!
//! A unary call's body is one length-prefixed protobuf message. Every
//! per-model request (`ModelInferRequest`, `ModelMetadataRequest`,
//! `ModelReadyRequest`) has the model's name as field 1 and its version
//! as field 2 (strings): [`model_of`] reads them with a bounded scan of
//! the encoding (no allocation; a malformed message is an error for
//! `INVALID_ARGUMENT`), and the call goes unchanged to a node of the
//! chosen version. The server-level calls (`ServerLive`, `ServerReady`,
//! `ServerMetadata`) are answered by the front itself ([`own_answer`]):
//! it is live and ready while it runs, as its `/readyz` says.

use std::convert::Infallible;

use axum::body::Body;
use axum::http::HeaderValue;
use axum::response::Response;
use bytes::Bytes;
use hyper::body::Frame;

/// The KServe v2 gRPC service's path prefix.
pub(super) const SERVICE: &str = "/inference.GRPCInferenceService/";

/// The per-model methods, routed by the model their message names.
pub(super) const PER_MODEL: [&str; 3] = ["ModelInfer", "ModelMetadata", "ModelReady"];

/// A gRPC answer carrying only a status, in headers (trailers-only).
pub(super) fn status(code: tonic::Code, message: &str) -> Response {
    let mut rsp = Response::new(Body::empty());
    let headers = rsp.headers_mut();
    headers.insert("content-type", HeaderValue::from_static("application/grpc"));
    headers.insert("grpc-status", HeaderValue::from(code as i32));
    // grpc-message is percent-encoded: keep printable ASCII, encode the rest.
    let mut encoded = String::with_capacity(message.len());
    for b in message.bytes() {
        if (b' '..=b'~').contains(&b) && b != b'%' {
            encoded.push(char::from(b));
        } else {
            encoded.push_str(&format!("%{b:02X}"));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&encoded) {
        headers.insert("grpc-message", v);
    }
    rsp
}

/// The front's own answer to a server-level method; `None` for others.
pub(super) fn own_answer(method: &str) -> Option<Response> {
    let message = match method {
        // ServerLiveResponse { live = true }, ServerReadyResponse { ready = true }.
        "ServerLive" | "ServerReady" => vec![0x08, 0x01],
        // ServerMetadataResponse { name, version, extensions = [] }.
        "ServerMetadata" => {
            let mut m = Vec::new();
            for (field, value) in [(1u8, "multi-model-front"), (2, env!("CARGO_PKG_VERSION"))] {
                m.push(field << 3 | 2);
                // Both strings are far below 128 bytes: a one-byte length.
                m.push(u8::try_from(value.len()).ok()?);
                m.extend_from_slice(value.as_bytes());
            }
            m
        }
        _ => return None,
    };
    let mut framed = Vec::with_capacity(5 + message.len());
    framed.push(0);
    framed.extend_from_slice(&u32::try_from(message.len()).ok()?.to_be_bytes());
    framed.extend_from_slice(&message);
    let mut trailers = http::HeaderMap::new();
    trailers.insert("grpc-status", HeaderValue::from_static("0"));
    let frames = [
        Ok::<_, Infallible>(Frame::data(Bytes::from(framed))),
        Ok(Frame::trailers(trailers)),
    ];
    let body = http_body_util::StreamBody::new(futures::stream::iter(frames));
    let mut rsp = Response::new(Body::new(body));
    rsp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/grpc"));
    Some(rsp)
}

/// Why a call's message could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Malformed {
    /// The front cannot read a compressed message.
    Compressed,
    /// Not one well-formed length-prefixed protobuf message.
    Invalid(String),
}

/// The model name (field 1) and version (field 2) of a unary call's body:
/// one length-prefixed, uncompressed protobuf message. Bounded by the
/// body's length: every step consumes at least one byte.
pub(super) fn model_of(body: &[u8]) -> Result<(&str, &str), Malformed> {
    let bad = |m: &str| Malformed::Invalid(m.to_string());
    let (&flag, rest) = body
        .split_first()
        .ok_or_else(|| bad("empty body: expected one gRPC message"))?;
    if flag == 1 {
        return Err(Malformed::Compressed);
    }
    if flag != 0 || rest.len() < 4 {
        return Err(bad("not a gRPC message frame"));
    }
    let (len, mut msg) = rest.split_at(4);
    let len = u32::from_be_bytes([len[0], len[1], len[2], len[3]]);
    if usize::try_from(len).ok() != Some(msg.len()) {
        return Err(bad(
            "the message length disagrees with the body (one message expected)",
        ));
    }
    let (mut name, mut version) = ("", "");
    while !msg.is_empty() {
        let key = varint(&mut msg).ok_or_else(|| bad("truncated field key"))?;
        let (field, wire) = (key >> 3, key & 7);
        if field == 0 {
            return Err(bad("field number 0"));
        }
        match wire {
            0 => {
                varint(&mut msg).ok_or_else(|| bad("truncated varint"))?;
            }
            1 | 5 => {
                let n = if wire == 1 { 8 } else { 4 };
                msg = msg.get(n..).ok_or_else(|| bad("truncated fixed field"))?;
            }
            2 => {
                let n = varint(&mut msg).ok_or_else(|| bad("truncated length"))?;
                let n = usize::try_from(n)
                    .ok()
                    .filter(|n| *n <= msg.len())
                    .ok_or_else(|| bad("a field's length runs past the message"))?;
                let (value, tail) = msg.split_at(n);
                msg = tail;
                if field == 1 || field == 2 {
                    let s = std::str::from_utf8(value).map_err(|_| {
                        bad(&format!("field {field} (model name/version): not UTF-8"))
                    })?;
                    // The last occurrence wins, as protobuf decoders do.
                    if field == 1 {
                        name = s;
                    } else {
                        version = s;
                    }
                }
            }
            _ => return Err(bad(&format!("field {field}: unsupported wire type {wire}"))),
        }
    }
    Ok((name, version))
}

/// Reads a varint of at most 10 bytes off the front of `buf`.
fn varint(buf: &mut &[u8]) -> Option<u64> {
    let mut value = 0u64;
    for i in 0..10 {
        let (&b, rest) = buf.split_first()?;
        *buf = rest;
        value |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            return Some(value);
        }
    }
    None
}

/// Smooth weighted round robin over the current weights (a rollout's
/// changes included): the next version, `None` when every weight is 0.
pub(super) fn pick(current: &mut Vec<f64>, weights: &[(String, f64)]) -> Option<usize> {
    current.resize(weights.len(), 0.0);
    let total: f64 = weights.iter().map(|(_, w)| w.max(0.0)).sum();
    if total <= 0.0 {
        return None;
    }
    let mut best = 0;
    for (i, (_, w)) in weights.iter().enumerate() {
        current[i] += w.max(0.0);
        if current[i] > current[best] {
            best = i;
        }
    }
    current[best] -= total;
    Some(best)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(msg: &[u8]) -> Vec<u8> {
        let mut v = vec![0];
        v.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        v.extend_from_slice(msg);
        v
    }

    #[test]
    fn the_model_and_version_are_read_past_other_fields() {
        // id (field 3) = "x", model_name = "m", a varint field 9, version "2".
        let msg = [
            0x1a, 1, b'x', 0x0a, 1, b'm', 0x48, 0x96, 0x01, 0x12, 1, b'2', 0x2d, 0, 0, 0, 0,
        ];
        assert_eq!(model_of(&frame(&msg)), Ok(("m", "2")));
        assert_eq!(model_of(&frame(&[])), Ok(("", "")));
    }

    #[test]
    fn malformed_messages_are_refused() {
        for body in [
            vec![],
            vec![0, 0, 0],
            frame(&[0x0a, 5, b'm']),
            frame(&[
                0x0a, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            ]),
            frame(&[0x0b]),
            frame(&[0x0a, 1, 0xff]),
            frame(&[0x02, 0]),
            vec![0, 0, 0, 0, 9, 0x0a, 0],
        ] {
            assert!(
                matches!(model_of(&body), Err(Malformed::Invalid(_))),
                "{body:?}"
            );
        }
        assert_eq!(model_of(&[1, 0, 0, 0, 0]), Err(Malformed::Compressed));
    }

    #[test]
    fn smooth_weighted_round_robin_follows_the_weights() {
        let weights = vec![("1".to_string(), 75.0), ("2".to_string(), 25.0)];
        let mut current = Vec::new();
        let picks: Vec<_> = (0..8).map(|_| pick(&mut current, &weights)).collect();
        assert_eq!(picks.iter().filter(|p| **p == Some(1)).count(), 2);
        let zero = vec![("1".to_string(), 0.0)];
        assert_eq!(pick(&mut current, &zero), None);
    }
}
