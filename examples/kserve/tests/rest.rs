//! The v2 REST routes: JSON and binary round trips per datatype, and every
//! bad input answered with its status and message.

mod common;

use axum::body::Body;
use axum::Router;
use bytes::Bytes;
use example_kserve::{rest_routes, Limits};
use example_tensor::{f16, DataType, Tensor, TensorData};
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use tower::ServiceExt;

fn app() -> Router {
    rest_routes(common::repo(), Limits::default())
}

struct Reply {
    status: StatusCode,
    headers: http::HeaderMap,
    body: Bytes,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .expect("an error message")
            .to_owned()
    }
}

async fn send(app: &Router, req: Request<Body>) -> Reply {
    let resp = app.clone().oneshot(req).await.unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        headers,
        body,
    }
}

async fn get(app: &Router, uri: &str) -> Reply {
    send(app, Request::get(uri).body(Body::empty()).unwrap()).await
}

async fn post(app: &Router, uri: &str, body: impl Into<Body>) -> Reply {
    let req = Request::post(uri)
        .header("content-type", "application/json")
        .body(body.into())
        .unwrap();
    send(app, req).await
}

/// A body with Triton's binary extension: `json` then `binary`.
async fn post_binary(app: &Router, uri: &str, json: &Value, binary: &[u8]) -> Reply {
    let header = serde_json::to_vec(json).unwrap();
    let mut body = header.clone();
    body.extend_from_slice(binary);
    let req = Request::post(uri)
        .header("inference-header-content-length", header.len())
        .body(Body::from(body))
        .unwrap();
    send(app, req).await
}

const INFER: &str = "/v2/models/identity/infer";

fn flat_json(data: &TensorData) -> Value {
    match data {
        TensorData::Bool(v) => json!(v),
        TensorData::Uint8(v) => json!(v),
        TensorData::Uint16(v) => json!(v),
        TensorData::Uint32(v) => json!(v),
        TensorData::Uint64(v) => json!(v),
        TensorData::Int8(v) => json!(v),
        TensorData::Int16(v) => json!(v),
        TensorData::Int32(v) => json!(v),
        TensorData::Int64(v) => json!(v),
        TensorData::Fp16(v) => json!(v.iter().map(|x| x.to_f32()).collect::<Vec<_>>()),
        TensorData::Fp32(v) => json!(v),
        TensorData::Fp64(v) => json!(v),
        TensorData::Bytes(v) => json!(v
            .iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect::<Vec<_>>()),
    }
}

/// Reads a response's flat `data` back as `datatype`.
fn from_json(datatype: DataType, data: &Value) -> TensorData {
    let v = data.as_array().expect("data is an array");
    let u = |x: &Value| x.as_u64().unwrap();
    let i = |x: &Value| x.as_i64().unwrap();
    let f = |x: &Value| x.as_f64().unwrap();
    match datatype {
        DataType::Bool => TensorData::Bool(v.iter().map(|x| x.as_bool().unwrap()).collect()),
        DataType::Uint8 => TensorData::Uint8(v.iter().map(|x| u(x) as u8).collect()),
        DataType::Uint16 => TensorData::Uint16(v.iter().map(|x| u(x) as u16).collect()),
        DataType::Uint32 => TensorData::Uint32(v.iter().map(|x| u(x) as u32).collect()),
        DataType::Uint64 => TensorData::Uint64(v.iter().map(u).collect()),
        DataType::Int8 => TensorData::Int8(v.iter().map(|x| i(x) as i8).collect()),
        DataType::Int16 => TensorData::Int16(v.iter().map(|x| i(x) as i16).collect()),
        DataType::Int32 => TensorData::Int32(v.iter().map(|x| i(x) as i32).collect()),
        DataType::Int64 => TensorData::Int64(v.iter().map(i).collect()),
        DataType::Fp16 => TensorData::Fp16(v.iter().map(|x| f16::from_f64(f(x))).collect()),
        DataType::Fp32 => TensorData::Fp32(v.iter().map(|x| f(x) as f32).collect()),
        DataType::Fp64 => TensorData::Fp64(v.iter().map(f).collect()),
        DataType::Bytes => TensorData::Bytes(
            v.iter()
                .map(|x| Bytes::from(x.as_str().unwrap().to_owned()))
                .collect(),
        ),
    }
}

/// Little-endian bytes of `data` as Triton's clients write them.
fn le_bytes(data: &TensorData) -> Vec<u8> {
    let mut out = Vec::new();
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                out.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match data {
        TensorData::Bool(v) => out.extend(v.iter().map(|&b| b as u8)),
        TensorData::Uint8(v) => out.extend_from_slice(v),
        TensorData::Uint16(v) => le!(v),
        TensorData::Uint32(v) => le!(v),
        TensorData::Uint64(v) => le!(v),
        TensorData::Int8(v) => le!(v),
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
    out
}

/// Any tensor of shape `[rows, cols]` whose values JSON can carry.
fn arb_tensor() -> impl Strategy<Value = Tensor> {
    (0usize..4, 0usize..4).prop_flat_map(|(rows, cols)| {
        let n = rows * cols;
        let vec = move |s| proptest::collection::vec(s, n);
        prop_oneof![
            vec(any::<bool>()).prop_map(TensorData::Bool),
            proptest::collection::vec(any::<u8>(), n).prop_map(TensorData::Uint8),
            proptest::collection::vec(any::<u16>(), n).prop_map(TensorData::Uint16),
            proptest::collection::vec(any::<u32>(), n).prop_map(TensorData::Uint32),
            proptest::collection::vec(any::<u64>(), n).prop_map(TensorData::Uint64),
            proptest::collection::vec(any::<i8>(), n).prop_map(TensorData::Int8),
            proptest::collection::vec(any::<i16>(), n).prop_map(TensorData::Int16),
            proptest::collection::vec(any::<i32>(), n).prop_map(TensorData::Int32),
            proptest::collection::vec(any::<i64>(), n).prop_map(TensorData::Int64),
            proptest::collection::vec(-65504.0f32..65504.0, n)
                .prop_map(|v| TensorData::Fp16(v.into_iter().map(f16::from_f32).collect())),
            proptest::collection::vec(-1e30f32..1e30, n).prop_map(TensorData::Fp32),
            proptest::collection::vec(-1e300f64..1e300, n).prop_map(TensorData::Fp64),
            proptest::collection::vec("[a-zé\"\\\\]{0,6}", n)
                .prop_map(|v| TensorData::Bytes(v.into_iter().map(Bytes::from).collect())),
        ]
        .prop_map(move |data| Tensor::new(vec![rows, cols], data).unwrap())
    })
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn json_round_trips_every_datatype(tensor in arb_tensor(), nested in any::<bool>()) {
        let flat = flat_json(&tensor.data);
        let data = if nested && tensor.shape[1] > 0 {
            let rows: Vec<Value> = flat
                .as_array()
                .unwrap()
                .chunks(tensor.shape[1])
                .map(|c| Value::from(c.to_vec()))
                .collect();
            Value::from(rows)
        } else {
            flat
        };
        let datatype = tensor.datatype();
        let request = json!({
            "id": "req-7",
            "parameters": {"priority": 1},
            "inputs": [{"name": "x", "shape": tensor.shape, "datatype": datatype.as_str(), "data": data}]
        });
        let reply = rt().block_on(post(&app(), INFER, request.to_string()));
        prop_assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        let body = reply.json();
        prop_assert_eq!(&body["id"], "req-7");
        prop_assert_eq!(&body["model_name"], "identity");
        let out = &body["outputs"][0];
        prop_assert_eq!(&out["name"], "x");
        prop_assert_eq!(&out["datatype"], datatype.as_str());
        prop_assert_eq!(&out["shape"], &json!(tensor.shape));
        prop_assert_eq!(from_json(datatype, &out["data"]), tensor.data);
    }

    #[test]
    fn binary_round_trips_every_datatype(tensor in arb_tensor(), binary_out in any::<bool>()) {
        let datatype = tensor.datatype();
        let raw = le_bytes(&tensor.data);
        let request = json!({
            "inputs": [{
                "name": "x", "shape": tensor.shape, "datatype": datatype.as_str(),
                "parameters": {"binary_data_size": raw.len()}
            }],
            "outputs": [{"name": "x", "parameters": {"binary_data": binary_out}}]
        });
        let reply = rt().block_on(post_binary(&app(), INFER, &request, &raw));
        prop_assert_eq!(reply.status, StatusCode::OK, "{}", String::from_utf8_lossy(&reply.body));
        if binary_out {
            let n: usize = reply.headers["inference-header-content-length"]
                .to_str().unwrap().parse().unwrap();
            let header: Value = serde_json::from_slice(&reply.body[..n]).unwrap();
            let out = &header["outputs"][0];
            prop_assert_eq!(&out["parameters"]["binary_data_size"], &json!(raw.len()));
            prop_assert!(out.get("data").is_none());
            prop_assert_eq!(&reply.body[n..], &raw[..]);
        } else {
            prop_assert!(reply.headers.get("inference-header-content-length").is_none());
            prop_assert_eq!(from_json(datatype, &reply.json()["outputs"][0]["data"]), tensor.data);
        }
    }
}

#[tokio::test]
async fn health_and_metadata() {
    let app = app();
    let server = get(&app, "/v2").await;
    assert_eq!(server.status, StatusCode::OK);
    assert_eq!(server.json()["name"], "convoy-test");
    assert_eq!(server.json()["extensions"][0], "binary_tensor_data");
    assert_eq!(get(&app, "/v2/health/live").await.json()["live"], true);
    assert_eq!(get(&app, "/v2/health/ready").await.status, StatusCode::OK);

    for uri in ["/v2/models/identity", "/v2/models/identity/versions/1"] {
        let meta = get(&app, uri).await;
        assert_eq!(meta.status, StatusCode::OK, "{uri}");
        let meta = meta.json();
        assert_eq!(meta["versions"], json!(["1"]));
        assert_eq!(meta["inputs"][0]["datatype"], "FP32");
        assert_eq!(meta["inputs"][0]["shape"], json!([-1, -1]));
        assert_eq!(meta["parameters"]["rollout"]["state"], "progressing");
        assert_eq!(meta["parameters"]["rollout"]["canary_percent"], 25.0);
    }
    // A model without parameters has no `parameters` member.
    let meta = get(&app, "/v2/models/slow").await.json();
    assert_eq!(meta["name"], "slow");
    assert!(meta.get("parameters").is_none(), "{meta}");
    let ready = get(&app, "/v2/models/identity/versions/1/ready").await;
    assert_eq!(ready.status, StatusCode::OK);
    assert_eq!(ready.json()["ready"], true);
    let cold = get(&app, "/v2/models/cold/ready").await;
    assert_eq!(cold.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(cold.json()["ready"], false);
}

#[tokio::test]
async fn unknown_model_or_version_is_404() {
    let app = app();
    for uri in [
        "/v2/models/nope",
        "/v2/models/identity/versions/9",
        "/v2/models/nope/ready",
    ] {
        let reply = get(&app, uri).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{uri}");
        assert!(
            reply.error().contains("nope") || reply.error().contains("9"),
            "{}",
            reply.error()
        );
    }
    let body = json!({"inputs": [{"name": "x", "shape": [1], "datatype": "INT32", "data": [1]}]});
    let reply = post(
        &app,
        "/v2/models/identity/versions/2/infer",
        body.to_string(),
    )
    .await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert!(
        reply.error().contains("no version \"2\""),
        "{}",
        reply.error()
    );
}

/// Sends `body` to identity and checks the status and a piece of the
/// message; then checks the server still answers a good request.
async fn refused(app: &Router, reply: Reply, status: StatusCode, message: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let error = reply.error();
    assert!(error.contains(message), "{error:?} lacks {message:?}");
    let good =
        json!({"inputs": [{"name": "x", "shape": [2], "datatype": "FP32", "data": [1.0, 2.5]}]});
    let ok = post(app, INFER, good.to_string()).await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(ok.json()["outputs"][0]["data"], json!([1.0, 2.5]));
}

fn one_input(shape: Value, datatype: &str, data: Value) -> String {
    json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype, "data": data}]})
        .to_string()
}

#[tokio::test]
async fn malformed_json_is_400() {
    let app = app();
    let reply = post(&app, INFER, "{\"inputs\": [").await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "malformed request JSON",
    )
    .await;
    let reply = post(&app, INFER, "{\"outputs\": []}").await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "missing field `inputs`",
    )
    .await;
    let reply = post(
        &app,
        INFER,
        one_input(json!([2]), "FP32", json!([1.0, {"a": 1}])),
    )
    .await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "input \"x\": FP32 data",
    )
    .await;
}

#[tokio::test]
async fn wrong_datatype_is_400() {
    let app = app();
    let reply = post(&app, INFER, one_input(json!([1]), "FLOAT32", json!([1.0]))).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "unknown datatype \"FLOAT32\"",
    )
    .await;
    let reply = post(&app, INFER, one_input(json!([2]), "INT8", json!([1, 2.5]))).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "INT8 data").await;
    let reply = post(&app, INFER, one_input(json!([1]), "UINT8", json!([300]))).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "range of u8").await;
    let reply = post(&app, INFER, one_input(json!([1]), "BOOL", json!([1]))).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "expected a boolean").await;
    let reply = post(&app, INFER, one_input(json!([1]), "BYTES", json!([1]))).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "expected a string").await;
}

/// Found by the `kserve_json` fuzz target's round-trip check: 70000 as FP16
/// (or 1e39 as FP32) became infinity, and the answer echoed it as `null`.
#[tokio::test]
async fn numbers_beyond_a_float_types_range_are_400() {
    let app = app();
    for (datatype, value, range) in [
        ("FP16", json!(70000), "range of f16"),
        ("FP16", json!(-65520.0), "range of f16"),
        ("FP32", json!(1e39), "range of f32"),
        ("FP32", json!(-3.5e38), "range of f32"),
    ] {
        let reply = post(&app, INFER, one_input(json!([1]), datatype, json!([value]))).await;
        refused(&app, reply, StatusCode::BAD_REQUEST, range).await;
    }
    // The largest finite values still pass, and come back as sent.
    for (datatype, value) in [
        ("FP16", json!(65504.0)),
        ("FP32", json!(3.4028235e38)),
        ("FP64", json!(1.7976931348623157e308)),
    ] {
        let reply = post(&app, INFER, one_input(json!([1]), datatype, json!([value]))).await;
        assert_eq!(reply.status, StatusCode::OK, "{datatype} {value}");
        assert_eq!(reply.json()["outputs"][0]["data"], json!([value]));
    }
}

#[tokio::test]
async fn shape_and_data_length_must_agree() {
    let app = app();
    let reply = post(
        &app,
        INFER,
        one_input(json!([2, 3]), "FP32", json!([1, 2, 3, 4, 5])),
    )
    .await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "holds 6 elements but 5",
    )
    .await;
    let reply = post(&app, INFER, one_input(json!([2]), "FP32", json!([1, 2, 3]))).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "more elements than the shape's 2",
    )
    .await;
    let reply = post(
        &app,
        INFER,
        one_input(json!([1, 2]), "INT64", json!([[1], [2]])),
    )
    .await;
    assert_eq!(
        reply.status,
        StatusCode::OK,
        "nesting is not checked against the shape, only the count"
    );
}

#[tokio::test]
async fn huge_or_negative_shapes_are_refused_before_allocating() {
    let app = app();
    let reply = post(
        &app,
        INFER,
        one_input(json!([1_000_000, 1_000_000]), "FP64", json!([1.0])),
    )
    .await;
    refused(&app, reply, StatusCode::PAYLOAD_TOO_LARGE, "over the limit").await;
    // Under the element limit, but more than the data text can hold.
    let small = rest_routes(common::repo(), Limits::default().max_elements(usize::MAX));
    let reply = post(
        &small,
        INFER,
        one_input(json!([1_000_000_000_000u64]), "FP64", json!([1.0])),
    )
    .await;
    refused(&small, reply, StatusCode::BAD_REQUEST, "cannot hold").await;
    let reply = post(
        &app,
        INFER,
        one_input(json!([1u64 << 40, 1u64 << 40]), "FP64", json!([1.0])),
    )
    .await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "overflows").await;
    let reply = post(&app, INFER, one_input(json!([2, -3]), "FP32", json!([1.0]))).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "negative dimension").await;
}

#[tokio::test]
async fn binary_extension_errors_are_400() {
    let app = app();
    // The header claims more bytes than the body has.
    let req = Request::post(INFER)
        .header("inference-header-content-length", 10_000)
        .body(Body::from("{}"))
        .unwrap();
    let reply = send(&app, req).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "has only 2 bytes").await;

    let input = |size: usize, datatype: &str, shape: Value| {
        json!({"inputs": [{"name": "x", "shape": shape, "datatype": datatype,
                           "parameters": {"binary_data_size": size}}]})
    };
    // binary_data_size past the end.
    let reply = post_binary(&app, INFER, &input(16, "FP32", json!([4])), &[0; 8]).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "past the end of the body",
    )
    .await;
    // Size and shape disagree.
    let reply = post_binary(&app, INFER, &input(8, "FP32", json!([4])), &[0; 8]).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "need 16 bytes, 8 given",
    )
    .await;
    // A BYTES element longer than the body.
    let mut raw = 1000u32.to_le_bytes().to_vec();
    raw.extend_from_slice(b"abc");
    let reply = post_binary(&app, INFER, &input(raw.len(), "BYTES", json!([1])), &raw).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "claims 1000 bytes but only 3 remain",
    )
    .await;
    // Bytes nobody claimed.
    let reply = post_binary(&app, INFER, &input(8, "FP32", json!([2])), &[0; 12]).await;
    refused(&app, reply, StatusCode::BAD_REQUEST, "4 binary bytes after").await;
}

#[tokio::test]
async fn body_over_the_limit_is_413() {
    let app = app();
    let big = vec![b' '; 50 << 20];
    let reply = post(&app, INFER, big).await;
    refused(&app, reply, StatusCode::PAYLOAD_TOO_LARGE, "over").await;
    // Without a Content-Length the limit still holds while reading.
    let small = rest_routes(common::repo(), Limits::default().max_body_bytes(64));
    let stream = futures_stream(vec![Bytes::from(vec![b' '; 100])]);
    let req = Request::post(INFER).body(stream).unwrap();
    let reply = send(&small, req).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(reply.error().contains("over 64 bytes"), "{}", reply.error());
}

fn futures_stream(chunks: Vec<Bytes>) -> Body {
    let frames = chunks
        .into_iter()
        .map(|c| Ok::<_, std::convert::Infallible>(http_body::Frame::data(c)));
    Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
}

#[tokio::test]
async fn requested_outputs_and_binary_data_output() {
    let app = app();
    let body = json!({
        "id": "abc",
        "parameters": {"binary_data_output": true},
        "inputs": [
            {"name": "a", "shape": [2], "datatype": "INT32", "data": [1, 2]},
            {"name": "b", "shape": [1], "datatype": "BYTES", "data": ["hé"]}
        ],
        "outputs": [{"name": "b"}, {"name": "a", "parameters": {"binary_data": false}}]
    });
    let reply = post(&app, INFER, body.to_string()).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.headers["content-type"], "application/octet-stream");
    let n: usize = reply.headers["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let header: Value = serde_json::from_slice(&reply.body[..n]).unwrap();
    assert_eq!(header["id"], "abc");
    assert_eq!(header["outputs"][0]["name"], "b");
    assert_eq!(header["outputs"][0]["parameters"]["binary_data_size"], 7);
    assert_eq!(header["outputs"][1]["name"], "a");
    assert_eq!(header["outputs"][1]["data"], json!([1, 2]));
    assert_eq!(&reply.body[n..], b"\x03\0\0\0h\xc3\xa9");

    let unknown = json!({
        "inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [1]}],
        "outputs": [{"name": "zzz"}]
    });
    let reply = post(&app, INFER, unknown.to_string()).await;
    refused(
        &app,
        reply,
        StatusCode::BAD_REQUEST,
        "no output named \"zzz\"",
    )
    .await;
}

#[tokio::test]
async fn service_errors_map_to_503() {
    let app = app();
    let body = one_input(json!([1]), "FP32", json!([1.0]));
    for model in ["busy", "cold"] {
        let reply = post(&app, &format!("/v2/models/{model}/infer"), body.clone()).await;
        // When to try again, in seconds.
        assert_eq!(
            reply
                .headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok()),
            Some("1"),
            "{model}"
        );
        refused(&app, reply, StatusCode::SERVICE_UNAVAILABLE, model).await;
    }
}

#[tokio::test(start_paused = true)]
async fn grpc_timeout_header_becomes_the_deadline() {
    let app = app();
    let body = one_input(json!([1]), "FP32", json!([1.0]));
    let req = Request::post("/v2/models/slow/infer")
        .header("grpc-timeout", "250m")
        .body(Body::from(body.clone()))
        .unwrap();
    let started = tokio::time::Instant::now();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, StatusCode::GATEWAY_TIMEOUT);
    assert!(reply.error().contains("deadline"), "{}", reply.error());
    assert_eq!(started.elapsed(), std::time::Duration::from_millis(250));

    let req = Request::post("/v2/models/deadline/infer")
        .header("grpc-timeout", "2S")
        .body(Body::from(body.clone()))
        .unwrap();
    let reply = send(&app, req).await;
    assert_eq!(reply.json()["outputs"][0]["data"], json!([2000]));
    // Triton's timeout parameter (µs); the earlier of the two wins.
    let with_param = json!({"parameters": {"timeout": 500_000},
        "inputs": [{"name": "x", "shape": [1], "datatype": "FP32", "data": [1.0]}]});
    let req = Request::post("/v2/models/deadline/infer")
        .header("grpc-timeout", "2S")
        .body(Body::from(with_param.to_string()))
        .unwrap();
    assert_eq!(
        send(&app, req).await.json()["outputs"][0]["data"],
        json!([500])
    );

    let req = Request::post("/v2/models/deadline/infer")
        .header("grpc-timeout", "soon")
        .body(Body::from(body))
        .unwrap();
    let reply = send(&app, req).await;
    assert_eq!(reply.status, StatusCode::BAD_REQUEST);
    assert!(reply.error().contains("grpc-timeout"), "{}", reply.error());
}
