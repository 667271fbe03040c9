//! The API's documentation: `/openapi.json` covers every route the server
//! serves, `/docs` renders them in a real browser (headless Chromium,
//! installed by `scripts/test_setup.sh`) with no network beyond the server,
//! and an image picked in its "Try it out" form is uploaded and classified.
//!
//! `CONVOY_DOCS_SCREENSHOT=<png>` also saves a screenshot of the rendered
//! page (docs/images/openapi-docs.png is made so).

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bytes::Bytes;
use common::{fp32_row, models_config, reference_jpeg, start, TEST_CONFIG};
use example_multi_model::http::{DOCS_PATH, OPENAPI_PATH};
use hyper::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, ChildStdout};

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
        ("GET", "/v1/models/{name}/drift"),
        ("GET", "/v1/models/{name}/drift.html"),
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
    // The multipart form has binary fields, which Swagger UI shows as file
    // pickers: `file` (one answer) and `files` (a list), neither required.
    let body = &doc["paths"]["/v1/models/{name}/{task}"]["post"]["requestBody"]["content"];
    let form = body["multipart/form-data"]["schema"]["$ref"]
        .as_str()
        .expect("a multipart/form-data body")
        .rsplit('/')
        .next()
        .unwrap();
    let form = &doc["components"]["schemas"][form];
    assert_eq!(form["properties"]["file"]["type"], "string", "{form}");
    assert_eq!(form["properties"]["file"]["format"], "binary", "{form}");
    assert_eq!(form["properties"]["files"]["type"], "array", "{form}");
    assert_eq!(
        form["properties"]["files"]["items"]["format"], "binary",
        "{form}"
    );
    assert!(form.get("required").is_none(), "{form}");
    for media in ["application/json", "image/jpeg", "image/png"] {
        assert!(body.get(media).is_some(), "{media} body not documented");
    }

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
        // The test configuration has no [deployment.drift]: the drift
        // routes answer their own 404, not the fallback's.
        if path.contains("/drift") {
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{method} {uri}");
            assert!(
                String::from_utf8_lossy(&r.body).contains("no drift monitor"),
                "{method} {uri}: {:?}",
                String::from_utf8_lossy(&r.body)
            );
            continue;
        }
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

/// Headless Chromium with nothing that reaches beyond the server.
const HEADLESS: [&str; 9] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

fn no_chromium(e: std::io::Error) -> ! {
    panic!(
        "chromium could not be started ({e}): Debian's package 'chromium' is needed; \
         install it with `bash scripts/test_setup.sh` (make test runs it)"
    )
}

/// Runs headless Chromium on `url` with `extra` arguments, within 60 s.
async fn chromium(url: &str, extra: &[&str]) -> std::process::Output {
    let profile = std::env::temp_dir().join(format!("convoy-docs-chromium-{}", std::process::id()));
    let child = tokio::process::Command::new("chromium")
        .args(HEADLESS)
        .arg("--virtual-time-budget=10000")
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap_or_else(|e| no_chromium(e));
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
    assert_eq!(blocks, 17, "one block per operation");

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

/// Headless Chromium driven over the DevTools protocol on a pipe
/// (`--remote-debugging-pipe`: commands in on fd 3, replies and events out
/// on fd 4, each a JSON message ended by a NUL byte), attached to one page.
struct DevTools {
    child: Child,
    commands: ChildStdin,
    replies: BufReader<ChildStdout>,
    next_id: u64,
    session: Option<String>,
    profile: PathBuf,
}

impl DevTools {
    /// Starts Chromium and opens `url` in a page.
    async fn open(url: &str) -> Self {
        let profile =
            std::env::temp_dir().join(format!("convoy-docs-devtools-{}", std::process::id()));
        // The shell hands this end's pipes to Chromium as fds 3 and 4.
        let mut child = tokio::process::Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>&2"#)
            .arg("chromium")
            .args(HEADLESS)
            .arg("--remote-debugging-pipe")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("about:blank")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| no_chromium(e));
        let mut tools = DevTools {
            commands: child.stdin.take().expect("piped"),
            replies: BufReader::new(child.stdout.take().expect("piped")),
            child,
            next_id: 0,
            session: None,
            profile,
        };
        let page = tools
            .call("Target.createTarget", json!({ "url": url }))
            .await;
        let attached = tools
            .call(
                "Target.attachToTarget",
                json!({ "targetId": page["targetId"], "flatten": true }),
            )
            .await;
        tools.session = Some(attached["sessionId"].as_str().unwrap().to_string());
        tools
    }

    /// Sends one command (to the page once attached) and returns its
    /// result; events in between are skipped.
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.try_call(method, params)
            .await
            .unwrap_or_else(|e| panic!("{method}: {e}"))
    }

    /// [`DevTools::call`], its error returned.
    async fn try_call(&mut self, method: &str, params: Value) -> Result<Value, Value> {
        self.next_id += 1;
        let id = self.next_id;
        let mut message = json!({ "id": id, "method": method, "params": params });
        if let Some(session) = &self.session {
            message["sessionId"] = json!(session);
        }
        let mut bytes = serde_json::to_vec(&message).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .await
            .expect("chromium reads its commands");
        loop {
            let mut reply = Vec::new();
            let n = tokio::time::timeout(
                Duration::from_secs(30),
                self.replies.read_until(0, &mut reply),
            )
            .await
            .unwrap_or_else(|_| panic!("{method}: no reply within 30 s"))
            .expect("chromium's replies are readable");
            assert!(
                n > 0,
                "{method}: chromium closed its DevTools pipe (is Debian's package 'chromium' \
                 installed? `bash scripts/test_setup.sh` installs it)"
            );
            reply.pop();
            let reply: Value = serde_json::from_slice(&reply).expect("a JSON message");
            if reply["id"] == id {
                return match reply.get("error") {
                    Some(error) => Err(error.clone()),
                    None => Ok(reply["result"].clone()),
                };
            }
        }
    }

    /// Waits (in the page, 20 s at most) until the JavaScript `expression`
    /// is truthy, and returns its value.
    async fn until(&mut self, expression: &str) -> Value {
        let poll = format!(
            "new Promise((resolve, reject) => {{ const start = Date.now(); \
               const poll = () => {{ const v = ({expression}); \
                 if (v) resolve(v); \
                 else if (Date.now() - start > 20000) reject(new Error('timed out')); \
                 else setTimeout(poll, 25); }}; poll(); }})"
        );
        let params = json!({ "expression": poll, "awaitPromise": true, "returnByValue": true });
        // A page that is loading (or redirecting) has no context to
        // evaluate in for a moment: ask again, a bounded number of times.
        let mut r = Err(Value::Null);
        for _ in 0..100 {
            r = self.try_call("Runtime.evaluate", params.clone()).await;
            match &r {
                Err(e) if e["message"].as_str().is_some_and(|m| m.contains("context")) => {
                    tokio::task::yield_now().await
                }
                _ => break,
            }
        }
        let r = r.unwrap_or_else(|e| panic!("{expression}: {e}"));
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression}: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Clicks the element `selector` once it is on the page.
    async fn click(&mut self, selector: &str) {
        self.until(&format!("!!document.querySelector('{selector}')"))
            .await;
        self.until(&format!(
            "(document.querySelector('{selector}').click(), true)"
        ))
        .await;
    }

    /// Sets the input or select `selector` to `value` once it is on the
    /// page, as typing or choosing would (React sees a value set through
    /// the native setter, then input and change events).
    async fn set(&mut self, selector: &str, value: &str) {
        self.until(&format!("!!document.querySelector('{selector}')"))
            .await;
        self.until(&format!(
            "(el => {{ \
               Object.getOwnPropertyDescriptor(Object.getPrototypeOf(el), 'value').set.call(el, '{value}'); \
               el.dispatchEvent(new Event('input', {{ bubbles: true }})); \
               el.dispatchEvent(new Event('change', {{ bubbles: true }})); \
               return el.value === '{value}'; }})(document.querySelector('{selector}'))"
        ))
        .await;
    }

    /// Sets the file input `selector` to `file`, as picking it would.
    async fn pick_file(&mut self, selector: &str, file: &Path) {
        let document = self.call("DOM.getDocument", json!({})).await;
        let input = self
            .call(
                "DOM.querySelector",
                json!({ "nodeId": document["root"]["nodeId"], "selector": selector }),
            )
            .await;
        assert_ne!(input["nodeId"], 0, "no {selector}");
        self.call(
            "DOM.setFileInputFiles",
            json!({ "nodeId": input["nodeId"], "files": [file.display().to_string()] }),
        )
        .await;
    }

    async fn close(mut self) {
        let _ = self.child.kill().await;
        let _ = std::fs::remove_dir_all(&self.profile);
    }
}

/// Operation `task`'s block on the Swagger UI page.
const TASK: &str = "#operations-v1-task";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jpeg_picked_in_the_docs_page_is_uploaded_and_classified() {
    let s = start(&models_config(&["resnet50"], "")).await;
    let jpeg = reference_jpeg();
    let want = s.post("/v1/models/resnet50/classify", jpeg.clone()).await;
    assert_eq!(want.status, StatusCode::OK);
    let want = want.json()["classes"][0]["label"].clone();
    let file = tempfile::Builder::new().suffix(".jpg").tempfile().unwrap();
    std::fs::write(file.path(), &jpeg).unwrap();

    let mut page = DevTools::open(&format!("http://{}{DOCS_PATH}/", s.addr)).await;
    // Open the operation, press "Try it out", fill in the path.
    page.click(&format!("{TASK} .opblock-summary-control"))
        .await;
    page.click(&format!("{TASK} .try-out__btn")).await;
    for (param, value) in [("name", "resnet50"), ("task", "classify")] {
        page.set(
            &format!("{TASK} tr[data-param-name=\"{param}\"] input"),
            value,
        )
        .await;
    }
    // The multipart form, whose `file` field is a file picker.
    page.set(
        &format!("{TASK} .opblock-section-request-body select"),
        "multipart/form-data",
    )
    .await;
    let picker = format!("{TASK} tr[data-property-name=\"file\"] input[type=file]");
    page.until(&format!("!!document.querySelector('{picker}')"))
        .await;
    page.pick_file(&picker, file.path()).await;
    page.click(&format!("{TASK} .execute")).await;
    let shown = page
        .until(&format!(
            "(() => {{ const table = document.querySelector('{TASK} .live-responses-table'); \
               const body = table?.querySelector('.response-col_description pre'); \
               return body && body.innerText.trim() && {{ \
                 status: table.querySelector('tr.response .response-col_status').innerText.trim(), \
                 body: body.innerText, \
                 curl: document.querySelector('{TASK} .curl-command')?.innerText ?? '' }}; }})()"
        ))
        .await;
    page.close().await;

    assert_eq!(shown["status"], "200", "{shown}");
    let curl = shown["curl"].as_str().unwrap();
    assert!(
        curl.contains("multipart/form-data") && curl.contains("file=@"),
        "not a multipart upload: {curl}"
    );
    let answer: Value = serde_json::from_str(shown["body"].as_str().unwrap())
        .unwrap_or_else(|e| panic!("the page shows no JSON answer ({e}): {shown}"));
    assert_eq!(answer["model"], "resnet50", "{answer}");
    assert_eq!(answer["classes"][0]["label"], want, "{answer}");
    assert_eq!(answer["classes"].as_array().unwrap().len(), 5, "{answer}");
    s.shutdown().await;
}
