//! The OpenAPI document of the v2 routes: OpenAPI 3.1, every route in it,
//! and every documented route served with an answer its schema describes.

mod common;

use axum::body::Body;
use example_kserve::{openapi, rest_routes, Limits};
use http::{Method, Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{json, Value};
use tower::ServiceExt;

fn document() -> Value {
    serde_json::from_str(&openapi().to_json().expect("serializes")).expect("valid JSON")
}

/// Follows a `#/components/...` reference.
fn resolve<'a>(doc: &'a Value, schema: &'a Value) -> &'a Value {
    match schema["$ref"].as_str() {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("a local reference");
            doc.pointer(pointer)
                .unwrap_or_else(|| panic!("{r} is not in the document"))
        }
        None => schema,
    }
}

/// The required and documented properties of an object schema, the parts
/// of an `allOf` together.
fn members(doc: &Value, schema: &Value) -> (Vec<String>, Vec<String>) {
    let schema = resolve(doc, schema);
    let (mut required, mut properties) = (Vec::new(), Vec::new());
    for part in schema["allOf"].as_array().into_iter().flatten() {
        let (r, p) = members(doc, part);
        required.extend(r);
        properties.extend(p);
    }
    for key in schema["required"].as_array().into_iter().flatten() {
        required.push(key.as_str().unwrap().to_owned());
    }
    for key in schema["properties"].as_object().into_iter().flatten() {
        properties.push(key.0.clone());
    }
    (required, properties)
}

/// Checks `value` against an object schema: its required properties are
/// there and it has none the schema does not name.
fn conforms(doc: &Value, schema: &Value, value: &Value, at: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{at}: {value} is not an object"));
    let (required, properties) = members(doc, schema);
    assert!(!properties.is_empty(), "{at}: the schema has no properties");
    for key in &required {
        assert!(object.contains_key(key), "{at}: {value} lacks {key:?}");
    }
    for key in object.keys() {
        assert!(properties.contains(key), "{at}: {key:?} is not documented");
    }
}

#[test]
fn the_document_is_openapi_3_1_with_every_v2_route() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths = doc["paths"].as_object().unwrap();
    let mut routes: Vec<String> = paths
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(move |method| format!("{method} {path}"))
        })
        .collect();
    routes.sort();
    assert_eq!(
        routes,
        [
            "get /v2",
            "get /v2/health/live",
            "get /v2/health/ready",
            "get /v2/models/{name}",
            "get /v2/models/{name}/ready",
            "get /v2/models/{name}/versions/{version}",
            "get /v2/models/{name}/versions/{version}/ready",
            "post /v2/models/{name}/infer",
            "post /v2/models/{name}/versions/{version}/infer",
        ]
    );
    for infer in [
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
    ] {
        let op = &doc["paths"][infer]["post"];
        for status in ["200", "400", "404", "413", "503", "504"] {
            assert!(
                op["responses"][status].is_object(),
                "{infer} does not document {status}"
            );
        }
        let error = &op["responses"]["413"]["content"]["application/json"]["schema"];
        conforms(&doc, error, &json!({"error": "too large"}), infer);
        let body = &op["requestBody"]["content"];
        assert!(body["application/json"].is_object());
        assert!(body["application/octet-stream"].is_object());
        let headers: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|p| p["in"] == "header")
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert_eq!(headers, ["Inference-Header-Content-Length", "grpc-timeout"]);
    }
    // Model metadata: the protocol's members, and the repository's
    // optional `parameters`.
    for path in ["/v2/models/{name}", "/v2/models/{name}/versions/{version}"] {
        let schema =
            &doc["paths"][path]["get"]["responses"]["200"]["content"]["application/json"]["schema"];
        let (required, properties) = members(&doc, schema);
        for member in ["name", "versions", "platform", "inputs", "outputs"] {
            assert!(required.iter().any(|r| r == member), "{path}: {member}");
        }
        assert!(properties.iter().any(|p| p == "parameters"), "{path}");
        assert!(!required.iter().any(|r| r == "parameters"), "{path}");
    }
    let datatypes = &doc["components"]["schemas"]["RequestInput"]["properties"]["datatype"];
    assert_eq!(datatypes["enum"].as_array().unwrap().len(), 13);
    // Every reference points into the document.
    let text = doc.to_string();
    for r in text.split("\"$ref\":\"").skip(1) {
        let r = &r[..r.find('"').unwrap()];
        resolve(&doc, &json!({ "$ref": r }));
    }
}

#[tokio::test]
async fn every_documented_route_is_served_as_documented() {
    let doc = document();
    let app = rest_routes(common::repo(), Limits::default());
    let request = json!({
        "id": "r1",
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, 2], "data": [1.0, 2.0]}]
    });
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let uri = path.replace("{name}", "identity").replace("{version}", "1");
            let method: Method = method.to_uppercase().parse().unwrap();
            let body = if method == Method::POST {
                Body::from(request.to_string())
            } else {
                Body::empty()
            };
            let req = Request::builder()
                .method(method.clone())
                .uri(&uri)
                .header("content-type", "application/json")
                .body(body)
                .unwrap();
            let rsp = app.clone().oneshot(req).await.unwrap();
            let status = rsp.status();
            let bytes = rsp.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(
                status,
                StatusCode::OK,
                "{method} {uri}: {}",
                String::from_utf8_lossy(&bytes)
            );
            let answer: Value = serde_json::from_slice(&bytes).unwrap();
            let schema = &op["responses"]["200"]["content"]["application/json"]["schema"];
            conforms(&doc, schema, &answer, &format!("{method} {uri}"));
            checked += 1;
        }
    }
    assert_eq!(checked, 9);
}

/// The router is built only from documented handlers (`routes!`), so a
/// route added with a plain `.route(...)` would be served undocumented.
#[test]
fn the_router_has_no_undocumented_routes() {
    let source = include_str!("../src/rest.rs");
    assert!(
        !source.contains(".route("),
        "rest.rs adds a route outside `routes!`: it would be missing from the document"
    );
    assert_eq!(
        source
            .lines()
            .filter(|l| l.trim_start().starts_with(".routes(routes!("))
            .count(),
        document()["paths"]
            .as_object()
            .unwrap()
            .values()
            .map(|item| item.as_object().unwrap().len())
            .sum::<usize>()
    );
}
