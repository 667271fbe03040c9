//! The API's documentation: `/openapi.json` covers every route the server
//! serves, and `/docs` renders them in a real browser (headless Chromium,
//! installed by `scripts/setup.sh`) with no network beyond the server.
//!
//! `CONVOY_DOCS_SCREENSHOT=<png>` also saves a screenshot of the rendered
//! page (docs/images/openapi-docs.png is made so).

mod common;

use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{fp32_row, start, TEST_CONFIG};
use example_multi_model::http::{DOCS_PATH, OPENAPI_PATH};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// Every (method, path) the document lists.
fn operations(doc: &Value) -> Vec<(String, String)> {
    let mut ops: Vec<(String, String)> = doc["paths"]
        .as_object()
        .expect("paths")
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .expect("a path item")
                .keys()
                .map(move |method| (method.to_uppercase(), path.clone()))
        })
        .collect();
    ops.sort();
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_document_is_openapi_3_1_and_lists_every_route_served() {
    let s = start(TEST_CONFIG).await;
    let r = s.get(OPENAPI_PATH).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.headers["content-type"], "application/json");
    let doc = r.json();
    assert!(
        doc["openapi"].as_str().unwrap().starts_with("3.1"),
        "{}",
        doc["openapi"]
    );
    let ops = operations(&doc);
    for want in [
        ("GET", "/v1/models"),
        ("POST", "/v1/models/{name}/{task}"),
        ("GET", "/v2"),
        ("GET", "/v2/health/live"),
        ("GET", "/v2/health/ready"),
        ("GET", "/v2/models/{name}"),
        ("GET", "/v2/models/{name}/versions/{version}"),
        ("GET", "/v2/models/{name}/ready"),
        ("GET", "/v2/models/{name}/versions/{version}/ready"),
        ("POST", "/v2/models/{name}/infer"),
        ("POST", "/v2/models/{name}/versions/{version}/infer"),
        ("GET", "/healthz"),
        ("GET", "/readyz"),
        ("GET", "/metrics"),
        ("GET", "/openapi.json"),
    ] {
        assert!(
            ops.contains(&(want.0.to_string(), want.1.to_string())),
            "{want:?} is not documented"
        );
    }
    // Errors are documented with their statuses and `{"error": ...}`.
    let task = &doc["paths"]["/v1/models/{name}/{task}"]["post"]["responses"];
    let infer = &doc["paths"]["/v2/models/{name}/infer"]["post"]["responses"];
    for status in ["400", "404", "413", "503", "504"] {
        for (route, responses) in [("v1 task", task), ("v2 infer", infer)] {
            assert_eq!(
                responses[status]["content"]["application/json"]["schema"]["$ref"],
                "#/components/schemas/ErrorBody",
                "{route} {status}"
            );
        }
    }
    let error = &doc["components"]["schemas"]["ErrorBody"];
    assert_eq!(error["required"], serde_json::json!(["error"]));

    // Every documented operation is served: a valid request to each answers
    // 200 (a route in the document but not in the router would get the
    // fallback's 404).
    for (method, path) in &ops {
        let uri = path
            .replace("{name}", "identity")
            .replace("{version}", "1")
            .replace("{task}", "infer");
        let method: Method = method.parse().unwrap();
        let body = if method == Method::POST {
            Bytes::from(fp32_row(&[1.0, 2.0]))
        } else {
            Bytes::new()
        };
        let r = s
            .request(
                method.clone(),
                &uri,
                body,
                &[("content-type", "application/json")],
            )
            .await;
        assert_eq!(
            r.status,
            StatusCode::OK,
            "{method} {uri}: {:?}",
            String::from_utf8_lossy(&r.body)
        );
    }
    s.shutdown().await;
}

/// The server's routes come only from documented handlers (`routes!` in
/// docs.rs, and the KServe layer's own): a plain `.route(...)` would serve a
/// route missing from the document.
#[test]
fn the_router_has_no_undocumented_routes() {
    for (file, source) in [
        ("http/mod.rs", include_str!("../src/http/mod.rs")),
        ("http/docs.rs", include_str!("../src/http/docs.rs")),
    ] {
        assert!(
            !source.contains(".route("),
            "{file} adds a route outside `routes!`: it would be missing from /openapi.json"
        );
    }
    let documented = include_str!("../src/http/docs.rs")
        .lines()
        .filter(|l| l.trim_start().starts_with(".routes(routes!("))
        .count();
    let v2 = operations(&serde_json::to_value(example_kserve::openapi()).unwrap()).len();
    let all = operations(&serde_json::to_value(example_multi_model::http::openapi()).unwrap());
    assert_eq!(all.len(), documented + v2, "{all:?}");
}

/// Runs headless Chromium on `url` with `extra` arguments, within 60 s.
async fn chromium(url: &str, extra: &[&str]) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!("convoy-docs-chromium-{}", std::process::id()));
    let child = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=10000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "chromium could not be started ({e}): Debian's package 'chromium' is needed; \
                 install it with `bash scripts/test_setup.sh` (make test runs it)"
            )
        });
    let out = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .expect("chromium finished within 60 s")
        .expect("chromium ran");
    let _ = std::fs::remove_dir_all(&profile);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_docs_page_renders_every_endpoint_in_chromium() {
    let s = start(TEST_CONFIG).await;
    // The page and its assets come from the server itself.
    let page = s.get(&format!("{DOCS_PATH}/")).await;
    assert_eq!(page.status, StatusCode::OK);
    let html = String::from_utf8_lossy(&page.body);
    assert!(html.contains("swagger-ui"), "{html}");
    assert!(
        !html.contains("src=\"http"),
        "an asset from elsewhere: {html}"
    );
    for asset in [
        "swagger-ui-bundle.js",
        "swagger-ui.css",
        "swagger-initializer.js",
    ] {
        let r = s.get(&format!("{DOCS_PATH}/{asset}")).await;
        assert_eq!(r.status, StatusCode::OK, "{asset}");
    }
    let initializer = s.get(&format!("{DOCS_PATH}/swagger-initializer.js")).await;
    assert!(String::from_utf8_lossy(&initializer.body).contains(OPENAPI_PATH));

    // `/docs` redirects to `/docs/`, which Chromium follows.
    let url = format!("http://{}{DOCS_PATH}", s.addr);
    let out = chromium(&url, &["--dump-dom"]).await;
    let dom = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The paths appear only once Swagger UI's script fetched /openapi.json
    // and rendered an operation block for each.
    for path in [
        "/v1/models",
        "/v1/models/{name}/{task}",
        "/v2/health/ready",
        "/v2/models/{name}/versions/{version}",
        "/v2/models/{name}/infer",
        "/v2/models/{name}/versions/{version}/infer",
        "/openapi.json",
    ] {
        assert!(
            dom.contains(&format!("data-path=\"{path}\"")),
            "{path} is not on the rendered page"
        );
    }
    assert!(dom.contains("convoy multi-model server"));
    let blocks = dom.matches("class=\"opblock-summary-path\"").count();
    assert_eq!(blocks, 15, "one block per operation");

    if let Ok(png) = std::env::var("CONVOY_DOCS_SCREENSHOT") {
        let png = std::path::absolute(&png).unwrap();
        let out = chromium(
            &url,
            &[
                &format!("--screenshot={}", png.display()),
                "--window-size=1280,1600",
                "--hide-scrollbars",
            ],
        )
        .await;
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(png.exists());
    }
    s.shutdown().await;
}
