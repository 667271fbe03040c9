//! A server on an ephemeral port and a small HTTP client for the tests.

#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use example_multi_model::{Config, Server};
use http_body_util::{BodyExt, Full};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The checked-in test configuration.
pub const TEST_CONFIG: &str = include_str!("../../config/test.toml");

/// A running server.
pub struct Running {
    pub addr: SocketAddr,
    pub server: Arc<Server>,
    pub stop: Option<oneshot::Sender<()>>,
    pub task: JoinHandle<std::io::Result<()>>,
    pub client: Client<HttpConnector, Full<Bytes>>,
}

/// A response: status, headers, body.
pub struct Reply {
    pub status: StatusCode,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }
}

/// Starts `config` on 127.0.0.1:0 and waits (bounded) until it is ready.
pub async fn start(config: &str) -> Running {
    let config = Config::parse(config).expect("test config");
    let server = Server::start(config).await.expect("server starts");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let serving = Arc::clone(&server);
    let task = tokio::spawn(async move {
        serving
            .serve(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let client = Client::builder(TokioExecutor::new()).build_http();
    let running = Running {
        addr,
        server,
        stop: Some(stop),
        task,
        client,
    };
    running
        .until(|| async { running.get("/readyz").await.status == StatusCode::OK })
        .await;
    running
}

impl Running {
    pub async fn request(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Reply {
        let mut req = Request::builder()
            .method(method)
            .uri(format!("http://{}{path}", self.addr));
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let rsp = self
            .client
            .request(req.body(Full::new(body)).unwrap())
            .await
            .expect("request sent");
        let status = rsp.status();
        let headers = rsp.headers().clone();
        let body = rsp.into_body().collect().await.expect("body").to_bytes();
        Reply {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.request(Method::GET, path, Bytes::new(), &[]).await
    }

    pub async fn post(&self, path: &str, body: impl Into<Bytes>) -> Reply {
        self.request(
            Method::POST,
            path,
            body.into(),
            &[("content-type", "application/json")],
        )
        .await
    }

    /// Polls `cond` every 5 ms for at most 10 s.
    pub async fn until<F, Fut>(&self, cond: F)
    where
        F: Fn() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        for _ in 0..2000 {
            if cond().await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        panic!("condition not met within 10 s");
    }

    /// `GET /v1/models`, as JSON.
    pub async fn models(&self) -> serde_json::Value {
        let r = self.get("/v1/models").await;
        assert_eq!(r.status, StatusCode::OK);
        r.json()
    }

    /// Stops accepting and waits for the server to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// The value of `metric{tenant="<tenant>"}` on a Prometheus page.
pub fn tenant_gauge(page: &str, metric: &str, tenant: &str) -> Option<f64> {
    let label = format!("tenant=\"{tenant}\"");
    page.lines()
        .find(|l| l.starts_with(&format!("{metric}{{")) && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// An identity request with one FP32 row of `values`.
pub fn fp32_row(values: &[f32]) -> String {
    serde_json::json!({
        "inputs": [{"name": "INPUT0", "datatype": "FP32", "shape": [1, values.len()], "data": values}]
    })
    .to_string()
}

/// The same server's KServe v2 gRPC service on its own ephemeral port.
pub struct Grpc {
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tower::BoxError>>,
}

impl Running {
    /// Serves gRPC for this server on 127.0.0.1:0.
    pub async fn serve_grpc(&self) -> Grpc {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = Arc::clone(&self.server);
        let task = tokio::spawn(async move {
            server
                .serve_grpc(listener, async {
                    let _ = stopped.await;
                })
                .await
        });
        Grpc { addr, stop, task }
    }
}

impl Grpc {
    /// Stops accepting and waits for the gRPC server to finish.
    pub async fn shutdown(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// One part of a `multipart/form-data` body: field name, file name, bytes.
pub type FormPart<'a> = (&'a str, Option<&'a str>, &'a [u8]);

/// A `multipart/form-data` body of `parts`, and its `content-type`.
pub fn multipart_form(parts: &[FormPart<'_>]) -> (String, Vec<u8>) {
    let boundary = "convoy-test-boundary-7MA4YWxkTrZu0gW";
    let mut body = Vec::new();
    for (name, file, data) in parts {
        body.extend_from_slice(format!("--{boundary}\r\n").as_bytes());
        match file {
            Some(file) => body.extend_from_slice(
                format!(
                    "content-disposition: form-data; name=\"{name}\"; filename=\"{file}\"\r\n\
                     content-type: application/octet-stream\r\n\r\n"
                )
                .as_bytes(),
            ),
            None => body.extend_from_slice(
                format!("content-disposition: form-data; name=\"{name}\"\r\n\r\n").as_bytes(),
            ),
        }
        body.extend_from_slice(data);
        body.extend_from_slice(b"\r\n");
    }
    body.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

impl Running {
    /// `POST path` with a `multipart/form-data` body of `parts`.
    pub async fn post_form(&self, path: &str, parts: &[FormPart<'_>]) -> Reply {
        let (content_type, body) = multipart_form(parts);
        self.request(
            Method::POST,
            path,
            body.into(),
            &[("content-type", &content_type)],
        )
        .await
    }
}

/// The repository's `models/`, holding the exported ResNet-50, MiniLM and
/// YOLOv8n (`scripts/setup.sh`).
pub fn models_dir() -> std::path::PathBuf {
    let dir = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models"));
    let complete = ["resnet50", "minilm", "yolov8n"]
        .iter()
        .all(|m| dir.join(m).join("1").join("model.json").exists());
    assert!(
        complete,
        "{} lacks the exported models: run scripts/setup.sh (make test does)",
        dir.display()
    );
    dir
}

/// `config/models-test.toml` with only the deployments `names`, its models
/// from [`models_dir`], and `server_extra` appended to `[server]` (e.g. a
/// `[server.uploads]` table).
pub fn models_config(names: &[&str], server_extra: &str) -> String {
    let full = include_str!("../../config/models-test.toml");
    let mut sections = full.split("[[deployment]]");
    let server = sections.next().expect("a [server] table").replace(
        "[server]\n",
        &format!(
            "[server]\nmodels_dir = {:?}\n",
            models_dir().display().to_string()
        ),
    );
    let mut config = format!("{server}\n{server_extra}\n");
    for section in sections {
        let name = section
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .expect("a deployment name")
            .trim_matches('"');
        if names.contains(&name) {
            config.push_str("[[deployment]]");
            config.push_str(section);
        }
    }
    config
}

/// Encodes `image` as a JPEG.
pub fn jpeg(image: &image::DynamicImage) -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image
        .to_rgb8()
        .write_to(&mut out, image::ImageFormat::Jpeg)
        .expect("JPEG encoding");
    out.into_inner()
}

/// ResNet-50's reference image (640×480) as a JPEG.
pub fn reference_jpeg() -> Vec<u8> {
    let png = std::fs::read(models_dir().join("resnet50/1/reference.png")).unwrap();
    jpeg(&image::load_from_memory(&png).expect("the reference PNG"))
}

/// A second, different picture (320×200, the reference's colours
/// inverted) as a JPEG.
pub fn other_jpeg() -> Vec<u8> {
    let png = std::fs::read(models_dir().join("resnet50/1/reference.png")).unwrap();
    let mut image = image::load_from_memory(&png)
        .expect("the reference PNG")
        .resize_exact(320, 200, image::imageops::FilterType::Triangle);
    image.invert();
    jpeg(&image)
}

/// Exports `scripts/python/export_poison.py`'s model (a TorchScript
/// classifier that fails its whole batch when one item is all ones) as
/// version 1 of `<dir>/poison`, with the project's Python.
pub fn export_poison(dir: &std::path::Path) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let status = std::process::Command::new(root.join(".venv/bin/python"))
        .arg(root.join("scripts/python/export_poison.py"))
        .arg(dir.join("poison/1"))
        .stdout(std::process::Stdio::null())
        .status()
        .expect(".venv/bin/python runs (scripts/setup.sh creates it)");
    assert!(status.success(), "export_poison.py failed");
}
