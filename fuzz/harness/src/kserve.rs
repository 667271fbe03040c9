//! The KServe v2 REST layer (`example-kserve`) driven with arbitrary infer
//! request bodies, through its axum routes as a client would send them:
//! v2 JSON bodies (target `kserve_json`) and Triton's binary tensor data
//! extension (target `kserve_binary`: an `Inference-Header-Content-Length`
//! value and a body). Every body goes to two models: `any`, which echoes
//! whatever it is given, and `typed`, which checks the inputs against its
//! metadata (FP32 `x` `[-1, 4]`, INT64 `ids` `[-1, -1]`, BYTES `text` `[-1]`)
//! as the multi-model server does. Checked:
//! - no panic, and every answer is 200, or a 4xx (400, 413) or 504 (only
//!   when the request set a timeout) with a JSON `{"error": "..."}` message;
//! - a shape claiming more than [`LIMITS`]`.max_elements` (or overflowing)
//!   is never accepted (the allocation test in `tests/alloc.rs` shows it is
//!   refused before anything is reserved for it);
//! - every accepted request's tensors have as many elements as their shape
//!   says, the datatype, name and shape the body declared, in its order;
//!   `typed` accepts only inputs that fit its metadata;
//! - the response describes every output as it was given (name, datatype,
//!   shape, element count; binary sizes add up to the bytes after the
//!   header), and a JSON-only request round-trips: the echoed outputs sent
//!   back as inputs decode to the same tensors.

use std::sync::Arc;

use parking_lot::Mutex;

use axum::body::Body;
use axum::http::{header, HeaderValue, Request, StatusCode};
use example_kserve::{
    rest_routes, BoxFuture, Error, InferRequest, InferResponse, Limits, ModelMetadata, Repository,
    ServerMetadata, TensorMetadata, HEADER_CONTENT_LENGTH,
};
use example_tensor::{DataType, NamedTensor, TensorData};
use http_body_util::BodyExt;
use serde_json::Value;
use tower::ServiceExt;

/// The limits the routes run with: small enough that a fuzzer reaches them.
pub const LIMITS: Limits = Limits {
    max_body_bytes: 1 << 20,
    max_elements: 1 << 16,
};

/// `kserve_json`: the input is a v2 JSON request body.
pub fn run_json(data: &[u8]) {
    check(None, data);
}

/// `kserve_binary`: the input's first line is the
/// `Inference-Header-Content-Length` value, the rest the body (JSON header
/// then binary tensor data). Without a newline the header is not sent.
pub fn run_binary(data: &[u8]) {
    match data.iter().position(|&b| b == b'\n') {
        Some(i) => check(Some(&data[..i]), &data[i + 1..]),
        None => check(None, data),
    }
}

/// What the models saw: the inputs of each accepted request.
#[derive(Default)]
struct Echo {
    seen: Mutex<Vec<Vec<NamedTensor>>>,
}

fn typed_metadata() -> ModelMetadata {
    let spec = |name: &str, datatype, shape: &[i64]| TensorMetadata {
        name: name.into(),
        datatype,
        shape: shape.to_vec(),
    };
    ModelMetadata {
        name: "typed".into(),
        versions: vec!["1".into()],
        platform: "fuzz".into(),
        inputs: vec![
            spec("x", DataType::Fp32, &[-1, 4]),
            spec("ids", DataType::Int64, &[-1, -1]),
            spec("text", DataType::Bytes, &[-1]),
        ],
        outputs: vec![],
    }
}

impl Repository for Echo {
    fn server_metadata(&self) -> ServerMetadata {
        ServerMetadata {
            name: "fuzz".into(),
            version: "1".into(),
            extensions: vec!["binary_tensor_data".into()],
        }
    }
    fn live(&self) -> bool {
        true
    }
    fn ready(&self) -> bool {
        true
    }
    fn model_metadata(&self, name: &str, _: Option<&str>) -> Result<ModelMetadata, Error> {
        match name {
            "typed" => Ok(typed_metadata()),
            _ => Err(Error::not_found(format!("no model {name}"))),
        }
    }
    fn model_ready(&self, name: &str, _: Option<&str>) -> Result<bool, Error> {
        Ok(name == "any" || name == "typed")
    }
    fn infer(
        &self,
        name: &str,
        _: Option<&str>,
        request: InferRequest,
    ) -> BoxFuture<'static, Result<InferResponse, Error>> {
        let checked = if name == "typed" {
            typed_metadata().check_inputs(&request.inputs)
        } else {
            Ok(())
        };
        if checked.is_ok() {
            self.seen.lock().push(request.inputs.clone());
        }
        let model_name = name.to_owned();
        Box::pin(async move {
            checked?;
            Ok(InferResponse {
                model_name,
                outputs: request.inputs,
                ..Default::default()
            })
        })
    }
}

struct Answer {
    status: StatusCode,
    header_len: Option<usize>,
    body: Vec<u8>,
}

fn send(
    rt: &tokio::runtime::Runtime,
    repo: &Arc<Echo>,
    model: &str,
    header_value: Option<&HeaderValue>,
    body: &[u8],
) -> Answer {
    let app = rest_routes(Arc::clone(repo), LIMITS);
    let mut request = Request::post(format!("/v2/models/{model}/infer"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(body.to_vec()))
        .expect("a valid request");
    if let Some(v) = header_value {
        request
            .headers_mut()
            .insert(HEADER_CONTENT_LENGTH, v.clone());
    }
    rt.block_on(async {
        let response = app.oneshot(request).await.expect("axum is infallible");
        let status = response.status();
        let header_len = response
            .headers()
            .get(HEADER_CONTENT_LENGTH)
            .map(|v| v.to_str().expect("ascii").parse().expect("a byte count"));
        let body = response
            .into_body()
            .collect()
            .await
            .expect("the body is in memory")
            .to_bytes()
            .to_vec();
        Answer {
            status,
            header_len,
            body,
        }
    })
}

/// Sends `body` (with `header` as `Inference-Header-Content-Length`) to
/// both models and checks the answers. Panics when a promise breaks.
pub fn check(header: Option<&[u8]>, body: &[u8]) {
    let header_value = match header {
        None => None,
        Some(h) => match HeaderValue::from_bytes(h) {
            Ok(v) => Some(v),
            // Not a header a client can send.
            Err(_) => return,
        },
    };
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .expect("runtime");
    // The JSON part, as the server splits it.
    let json_part = match &header_value {
        None => Some(body),
        Some(v) => v
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .and_then(|n| body.get(..n)),
    };
    let declared: Option<Value> = json_part.and_then(|j| serde_json::from_slice(j).ok());
    for model in ["any", "typed"] {
        let repo = Arc::new(Echo::default());
        let answer = send(&rt, &repo, model, header_value.as_ref(), body);
        let seen = std::mem::take(&mut *repo.seen.lock());
        if answer.status != StatusCode::OK {
            check_refusal(&answer, declared.as_ref());
            continue;
        }
        assert_eq!(seen.len(), 1, "{model}: 200 without one model call");
        let declared = declared
            .as_ref()
            .unwrap_or_else(|| panic!("{model}: accepted a body that is not JSON"));
        let inputs = &seen[0];
        check_inputs(model, declared, inputs);
        let outputs = check_response(model, &answer, declared, inputs);
        if header_value.is_none() && model == "any" {
            round_trip(&rt, outputs, inputs);
        }
    }
}

fn check_refusal(answer: &Answer, declared: Option<&Value>) {
    let timeout_set = declared
        .and_then(|d| d.get("parameters"))
        .and_then(|p| p.get("timeout"))
        .is_some();
    let allowed = [StatusCode::BAD_REQUEST, StatusCode::PAYLOAD_TOO_LARGE];
    assert!(
        allowed.contains(&answer.status)
            || (answer.status == StatusCode::GATEWAY_TIMEOUT && timeout_set),
        "refused with {}: {}",
        answer.status,
        String::from_utf8_lossy(&answer.body)
    );
    let error: Value = serde_json::from_slice(&answer.body).expect("a JSON error body");
    let message = error["error"].as_str().expect("an error message");
    assert!(!message.is_empty(), "an empty error message");
}

/// The element count a declared shape claims; `None` when it is negative
/// or overflows.
fn claimed(shape: &[Value]) -> Option<u64> {
    shape
        .iter()
        .try_fold(1u64, |n, d| d.as_u64().and_then(|d| n.checked_mul(d)))
}

fn check_inputs(model: &str, declared: &Value, inputs: &[NamedTensor]) {
    let body_inputs = declared["inputs"].as_array().expect("accepted: inputs");
    assert_eq!(body_inputs.len(), inputs.len(), "{model}: inputs lost");
    for (d, got) in body_inputs.iter().zip(inputs) {
        let shape = d["shape"].as_array().expect("accepted: a shape");
        let count = claimed(shape).expect("accepted: a valid shape");
        assert!(
            count <= LIMITS.max_elements as u64,
            "{model}: accepted {count} elements, over the limit"
        );
        assert_eq!(d["name"].as_str(), Some(got.name.as_str()));
        assert_eq!(
            d["datatype"].as_str(),
            Some(got.tensor.datatype().as_str()),
            "{model}: datatype of {:?}",
            got.name
        );
        let dims: Vec<u64> = shape.iter().map(|v| v.as_u64().expect("u64")).collect();
        let got_dims: Vec<u64> = got.tensor.shape.iter().map(|&d| d as u64).collect();
        assert_eq!(dims, got_dims, "{model}: shape of {:?}", got.name);
        assert_eq!(
            got.tensor.data.len() as u64,
            count,
            "{model}: {:?} holds another number of elements than its shape",
            got.name
        );
    }
    if model == "typed" {
        let meta = typed_metadata();
        assert_eq!(inputs.len(), meta.inputs.len(), "typed: inputs missing");
        for spec in &meta.inputs {
            let t = &inputs
                .iter()
                .find(|i| i.name == spec.name)
                .expect("typed: every input given")
                .tensor;
            assert_eq!(t.datatype(), spec.datatype);
            assert_eq!(t.shape.len(), spec.shape.len());
            for (&d, &s) in t.shape.iter().zip(&spec.shape) {
                assert!(
                    s < 0 || d as i64 == s,
                    "typed: {:?} fixed dimension",
                    spec.name
                );
            }
        }
    }
}

/// Checks the response against the inputs echoed; returns its JSON
/// `outputs`.
fn check_response(
    model: &str,
    answer: &Answer,
    declared: &Value,
    inputs: &[NamedTensor],
) -> Vec<Value> {
    let json_len = answer.header_len.unwrap_or(answer.body.len());
    assert!(
        json_len <= answer.body.len(),
        "{model}: header past the body"
    );
    let response: Value =
        serde_json::from_slice(&answer.body[..json_len]).expect("a JSON response");
    let outputs = response["outputs"].as_array().expect("outputs").clone();
    let requested = declared
        .get("outputs")
        .and_then(Value::as_array)
        .is_some_and(|a| !a.is_empty());
    let unique = inputs
        .iter()
        .enumerate()
        .all(|(i, a)| inputs[..i].iter().all(|b| b.name != a.name));
    if requested && !unique {
        // Which of two same-named inputs answers is the echo's business.
        return outputs;
    }
    if !requested {
        assert_eq!(outputs.len(), inputs.len(), "{model}: outputs lost");
    }
    let mut binary = 0usize;
    for (i, o) in outputs.iter().enumerate() {
        let name = o["name"].as_str().expect("an output name");
        let input = if requested {
            inputs
                .iter()
                .find(|i| i.name == name)
                .unwrap_or_else(|| panic!("{model}: output {name:?} was not an input"))
        } else {
            &inputs[i]
        };
        assert_eq!(name, input.name, "{model}: output order");
        assert_eq!(
            o["datatype"].as_str(),
            Some(input.tensor.datatype().as_str())
        );
        let shape: Vec<usize> = o["shape"]
            .as_array()
            .expect("a shape")
            .iter()
            .map(|d| d.as_u64().expect("a dimension") as usize)
            .collect();
        assert_eq!(
            shape, input.tensor.shape,
            "{model}: output shape of {name:?}"
        );
        match o.get("data") {
            Some(data) => assert_eq!(
                flat_len(data),
                input.tensor.data.len(),
                "{model}: output data of {name:?}"
            ),
            None => {
                binary += o["parameters"]["binary_data_size"]
                    .as_u64()
                    .expect("binary output without data has a size")
                    as usize
            }
        }
    }
    assert_eq!(
        binary,
        answer.body.len() - json_len,
        "{model}: binary sizes do not add up to the bytes after the header"
    );
    if requested {
        Vec::new()
    } else {
        outputs
    }
}

fn flat_len(v: &Value) -> usize {
    match v {
        Value::Array(items) => items.iter().map(flat_len).sum(),
        _ => 1,
    }
}

/// The echoed outputs sent back as inputs must decode to the same tensors.
fn round_trip(rt: &tokio::runtime::Runtime, outputs: Vec<Value>, inputs: &[NamedTensor]) {
    if outputs.len() != inputs.len() || outputs.iter().any(|o| o.get("data").is_none()) {
        return;
    }
    let body = serde_json::to_vec(&serde_json::json!({ "inputs": outputs })).expect("JSON");
    let repo = Arc::new(Echo::default());
    let answer = send(rt, &repo, "any", None, &body);
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "the echoed outputs of an accepted request are refused as inputs: {}",
        String::from_utf8_lossy(&answer.body)
    );
    let seen = std::mem::take(&mut *repo.seen.lock());
    let again = &seen[0];
    for (a, b) in inputs.iter().zip(again) {
        assert_eq!(a.name, b.name);
        assert_eq!(a.tensor.shape, b.tensor.shape);
        assert!(
            same_data(&a.tensor.data, &b.tensor.data),
            "{:?} does not round-trip: {:?} became {:?}",
            a.name,
            a.tensor.data,
            b.tensor.data
        );
    }
}

fn same_data(a: &TensorData, b: &TensorData) -> bool {
    match (a, b) {
        // Compared bit for bit: -0.0 stays -0.0.
        (TensorData::Fp32(x), TensorData::Fp32(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (TensorData::Fp64(x), TensorData::Fp64(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        (TensorData::Fp16(x), TensorData::Fp16(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        }
        _ => a == b,
    }
}
