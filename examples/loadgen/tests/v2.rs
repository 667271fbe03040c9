//! The KServe v2 REST modes against an in-test server that decodes what it
//! receives the way a v2 server must (JSON tensors; Triton's binary
//! extension: `Inference-Header-Content-Length` bytes of JSON, then each
//! input's `binary_data_size` bytes).

use std::time::Duration;

use axum::{body::Bytes, extract::Path, http::HeaderMap, http::StatusCode, routing::post, Router};
use loadgen::payload::Payloads;
use loadgen::v2::{generate, infer_path, rest_payload, Encoding, InputSpec, HEADER_CONTENT_LENGTH};
use loadgen::{run, LoadConfig};
use serde_json::Value;

/// Checks one v2 infer request; 400 with a reason when it is malformed.
fn check(headers: &HeaderMap, body: &[u8]) -> Result<(), String> {
    let (json, mut raw) = match headers.get(HEADER_CONTENT_LENGTH) {
        Some(len) => {
            let len: usize = len
                .to_str()
                .map_err(|e| e.to_string())?
                .parse()
                .map_err(|_| "length")?;
            let json = body.get(..len).ok_or("header length past the body")?;
            (json, &body[len..])
        }
        None => (body, &[][..]),
    };
    let req: Value = serde_json::from_slice(json).map_err(|e| e.to_string())?;
    for input in req["inputs"].as_array().ok_or("no inputs")? {
        let elements: u64 = input["shape"]
            .as_array()
            .ok_or("no shape")?
            .iter()
            .map(|d| d.as_u64().unwrap())
            .product();
        match input["parameters"]["binary_data_size"].as_u64() {
            Some(size) => {
                let size = size as usize;
                if raw.len() < size {
                    return Err("binary data past the body".into());
                }
                if input["datatype"] == "FP32" && size as u64 != elements * 4 {
                    return Err("size".into());
                }
                raw = &raw[size..];
            }
            None => {
                let data = input["data"].as_array().ok_or("no data")?;
                if data.len() as u64 != elements {
                    return Err("shape/data mismatch".into());
                }
            }
        }
    }
    if !raw.is_empty() {
        return Err("trailing bytes".into());
    }
    Ok(())
}

async fn serve() -> String {
    let app = Router::new().route(
        "/v2/models/{model}/infer",
        post(
            |Path(model): Path<String>, headers: HeaderMap, body: Bytes| async move {
                match check(&headers, &body) {
                    Ok(()) if model == "identity" => {
                        (StatusCode::OK, r#"{"outputs":[]}"#.to_owned())
                    }
                    Ok(()) => (
                        StatusCode::NOT_FOUND,
                        format!(r#"{{"error":"no model {model}"}}"#),
                    ),
                    Err(e) => (StatusCode::BAD_REQUEST, format!(r#"{{"error":"{e}"}}"#)),
                }
            },
        ),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("http://{addr}")
}

async fn v2_run(base: &str, model: &str, encoding: Encoding) -> loadgen::LoadReport {
    let specs: Vec<InputSpec> = ["INPUT0:FP32:2,16", "MASK:INT64:2,16", "TEXT:BYTES:2"]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect();
    let payloads = (0..4)
        .map(|seed| {
            let inputs: Vec<_> = specs.iter().map(|s| generate(s, seed, &[])).collect();
            rest_payload(&inputs, encoding).unwrap()
        })
        .collect();
    let config = LoadConfig::new(
        format!("{base}{}", infer_path(model, None))
            .parse()
            .unwrap(),
    )
    .payloads(Payloads::many(payloads).unwrap())
    .concurrency(4)
    .max_requests(100)
    .duration(Duration::from_secs(60));
    run(&config).await.unwrap()
}

#[tokio::test]
async fn json_and_binary_requests_are_well_formed_v2() {
    let base = serve().await;
    for encoding in [Encoding::Json, Encoding::Binary] {
        let report = v2_run(&base, "identity", encoding).await;
        assert_eq!(report.ok, 100, "{encoding:?}: {:?}", report.errors);
    }
    let report = v2_run(&base, "missing", Encoding::Binary).await;
    assert_eq!(report.errors.get("http 404"), Some(&100));
}
