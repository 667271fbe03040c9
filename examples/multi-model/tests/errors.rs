//! The error table of `examples/README.md`, walked on the three protocols:
//! every kind is in the table, and v1, v2 REST and v2 gRPC answer each kind
//! with the table's status. End to end, a contract violation, an unknown
//! model and a model failure (a TorchScript model that raises, exported by
//! `scripts/python/export_poison.py`) are answered so on a running server,
//! the failure with a short message and the request id, never the model's
//! error text.

mod common;

use common::export_poison;

use axum::response::IntoResponse;
use example_kserve::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use example_kserve::proto::model_infer_request::InferInputTensor;
use example_kserve::proto::{InferTensorContents, ModelInferRequest};
use example_multi_model::error::{to_v2, ErrorKind};
use example_multi_model::http::ApiError;
use hyper::StatusCode;
use tower::BoxError;

/// One row of the table: kind, v1 status, v2 REST status, gRPC code name.
struct Row {
    kind: ErrorKind,
    v1: u16,
    rest: u16,
    grpc: String,
}

fn table() -> Vec<Row> {
    let readme = include_str!("../../README.md");
    let start = readme
        .find("<!-- error-table -->")
        .expect("the table's start marker");
    let end = readme
        .find("<!-- /error-table -->")
        .expect("the table's end marker");
    readme[start..end]
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(|c| c.trim().trim_matches('`')).collect();
            let kind = ErrorKind::ALL
                .into_iter()
                .find(|k| format!("{k:?}") == cells[1])
                .unwrap_or_else(|| panic!("unknown kind {:?}", cells[1]));
            Row {
                kind,
                v1: cells[3].parse().unwrap(),
                rest: cells[4].parse().unwrap(),
                grpc: cells[5].to_string(),
            }
        })
        .collect()
}

/// `InvalidArgument` → `INVALID_ARGUMENT`.
fn code_name(code: tonic::Code) -> String {
    let mut out = String::new();
    for (i, c) in format!("{code:?}").chars().enumerate() {
        if c.is_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[test]
fn every_kind_is_in_the_table_and_each_protocol_answers_it_so() {
    let rows = table();
    for kind in ErrorKind::ALL {
        assert_eq!(
            rows.iter().filter(|r| r.kind == kind).count(),
            1,
            "{kind:?} appears once in the table"
        );
    }
    for row in &rows {
        let error = || -> BoxError { Box::new(example_kserve::Error::new(row.kind, "what")) };
        assert_eq!(
            ApiError::from_service(error(), "id-1").status.as_u16(),
            row.v1,
            "v1 {:?}",
            row.kind
        );
        let v2 = to_v2(&error(), "id-1");
        assert_eq!(v2.kind(), row.kind);
        assert_eq!(
            v2.clone().into_response().status().as_u16(),
            row.rest,
            "REST {:?}",
            row.kind
        );
        assert_eq!(
            code_name(tonic::Status::from(v2).code()),
            row.grpc,
            "gRPC {:?}",
            row.kind
        );
    }
    // An error the server does not know is internal: a short line with the
    // request id, not the error's text.
    let unknown: BoxError = "libtorch: RuntimeError at model.py:12".into();
    let v1 = ApiError::from_service(unknown, "id-7");
    assert_eq!(v1.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(v1.message.contains("id-7") && !v1.message.contains("RuntimeError"));
    let unknown: BoxError = "libtorch: RuntimeError at model.py:12".into();
    let v2 = to_v2(&unknown, "id-8");
    assert_eq!(v2.kind(), ErrorKind::Internal);
    assert!(v2.message().contains("id-8") && !v2.message().contains("RuntimeError"));
}

/// An 8×8 PNG, all white (the poison marker) or all black.
fn png(white: bool) -> Vec<u8> {
    let image = image::RgbImage::from_pixel(8, 8, image::Rgb([if white { 255 } else { 0 }; 3]));
    let mut out = std::io::Cursor::new(Vec::new());
    image.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn v2_body(shape: [usize; 4], value: f32) -> String {
    let n: usize = shape.iter().product();
    serde_json::json!({
        "id": "req-42",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": shape, "data": vec![value; n]}]
    })
    .to_string()
}

fn grpc_request(model: &str, shape: [i64; 4], value: f32) -> ModelInferRequest {
    let n = shape.iter().product::<i64>() as usize;
    ModelInferRequest {
        model_name: model.into(),
        id: "req-43".into(),
        inputs: vec![InferInputTensor {
            name: "input".into(),
            datatype: "FP32".into(),
            shape: shape.to_vec(),
            parameters: Default::default(),
            contents: Some(InferTensorContents {
                fp32_contents: vec![value; n],
                ..Default::default()
            }),
        }],
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_server_answers_by_the_table() {
    let rows = table();
    let row = |k: ErrorKind| rows.iter().find(|r| r.kind == k).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    export_poison(tmp.path());
    let config = format!(
        "[server]\nmodels_dir = {:?}\nrequest_timeout = \"60s\"\n\n\
         [[deployment]]\nname = \"poison\"\nmodel = \"poison\"\n\
         [deployment.device]\nkind = \"cpu\"\n",
        tmp.path().display().to_string()
    );
    let s = common::start(&config).await;
    let g = s.serve_grpc().await;
    let mut client = GrpcInferenceServiceClient::connect(format!("http://{}", g.addr))
        .await
        .unwrap();

    // BadRequest: a batch of zero.
    let k = row(ErrorKind::BadRequest);
    let r = s
        .post("/v2/models/poison/infer", v2_body([0, 3, 8, 8], 0.5))
        .await;
    assert_eq!(r.status.as_u16(), k.rest);
    let e = client
        .model_infer(grpc_request("poison", [0, 3, 8, 8], 0.5))
        .await
        .unwrap_err();
    assert_eq!(code_name(e.code()), k.grpc);
    let r = s.post("/v1/models/poison/classify", "not an image").await;
    assert_eq!(
        r.status,
        StatusCode::UNPROCESSABLE_ENTITY,
        "v1's own parsing"
    );

    // NotFound: no such model.
    let k = row(ErrorKind::NotFound);
    let r = s
        .post("/v2/models/nope/infer", v2_body([1, 3, 8, 8], 0.5))
        .await;
    assert_eq!(r.status.as_u16(), k.rest);
    let r = s.post("/v1/models/nope/classify", png(false)).await;
    assert_eq!(r.status.as_u16(), k.v1);
    let e = client
        .model_infer(grpc_request("nope", [1, 3, 8, 8], 0.5))
        .await
        .unwrap_err();
    assert_eq!(code_name(e.code()), k.grpc);

    // Internal: the model raises; the answer names the request id, not the
    // model's error.
    let k = row(ErrorKind::Internal);
    let leaks = |m: &str| m.contains("poisoned") || m.contains("RuntimeError");
    let r = s
        .post("/v2/models/poison/infer", v2_body([1, 3, 8, 8], 1.0))
        .await;
    assert_eq!(r.status.as_u16(), k.rest);
    let m = r.json()["error"].as_str().unwrap().to_string();
    assert!(m.contains("req-42") && !leaks(&m), "{m}");
    let r = s
        .request(
            hyper::Method::POST,
            "/v1/models/poison/classify",
            png(true).into(),
            &[("x-request-id", "req-41")],
        )
        .await;
    assert_eq!(r.status.as_u16(), k.v1);
    let m = r.json()["error"].as_str().unwrap().to_string();
    assert!(m.contains("req-41") && !leaks(&m), "{m}");
    let e = client
        .model_infer(grpc_request("poison", [1, 3, 8, 8], 1.0))
        .await
        .unwrap_err();
    assert_eq!(code_name(e.code()), k.grpc);
    assert!(
        e.message().contains("req-43") && !leaks(e.message()),
        "{}",
        e.message()
    );

    // And a good request still passes on each.
    let r = s.post("/v1/models/poison/classify", png(false)).await;
    assert_eq!(r.status, StatusCode::OK);
    g.shutdown().await;
    s.shutdown().await;
}
