//! Test support: a kube `Client` over `tower_test::mock`, recorded API-server
//! answers replayed in order, and helpers to read requests.

#![allow(dead_code, unreachable_pub)]

pub mod cluster;

use std::convert::Infallible;

use bytes::Bytes;
use futures::stream::{self, StreamExt};
use http::{Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use kube::client::Body as KubeBody;
use kube::Client;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// The body of a mocked answer: whole, or streamed (a watch).
pub type TestBody = UnsyncBoxBody<Bytes, Infallible>;
/// The API server's side of the mock.
pub type ApiHandle = tower_test::mock::Handle<Request<KubeBody>, Response<TestBody>>;

/// A client whose every request arrives at the returned handle.
pub fn mock_client() -> (Client, ApiHandle) {
    let (service, handle) = tower_test::mock::pair::<Request<KubeBody>, Response<TestBody>>();
    (Client::new(service, "default"), handle)
}

/// A recorded answer file from `tests/recorded/`.
pub fn recorded(name: &str) -> String {
    let path = format!("{}/tests/recorded/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A whole answer.
pub fn answer(status: u16, body: impl Into<Bytes>) -> Response<TestBody> {
    Response::builder()
        .status(StatusCode::from_u16(status).expect("status"))
        .header("content-type", "application/json")
        .body(Full::new(body.into()).boxed_unsync())
        .expect("response")
}

/// A streamed answer and the sender of its chunks; the body ends when the
/// sender is dropped.
pub fn streamed() -> (Response<TestBody>, mpsc::Sender<Bytes>) {
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let chunks = stream::unfold(rx, |mut rx| async move {
        let chunk = rx.recv().await?;
        Some((Ok::<_, Infallible>(Frame::data(chunk)), rx))
    });
    let body = StreamBody::new(chunks.boxed()).boxed_unsync();
    let response = Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(body)
        .expect("response");
    (response, tx)
}

/// What the client sent.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: Method,
    pub path: String,
    pub query: String,
    pub content_type: Option<String>,
    pub body: serde_json::Value,
}

impl Seen {
    /// The query parameter `name`, decoded.
    pub fn param(&self, name: &str) -> Option<String> {
        self.query.split('&').find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == name).then(|| percent_decode(v))
        })
    }

    /// `"GET /path"`, for comparing sequences.
    pub fn line(&self) -> String {
        format!("{} {}", self.method, self.path)
    }
}

pub fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Reads a request the client sent.
pub async fn read(request: Request<KubeBody>) -> Seen {
    let (parts, body) = request.into_parts();
    let bytes = body.collect_bytes().await.expect("request body");
    Seen {
        method: parts.method,
        path: parts.uri.path().to_owned(),
        query: parts.uri.query().unwrap_or_default().to_owned(),
        content_type: parts
            .headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned),
        body: if bytes.is_empty() {
            serde_json::Value::Null
        } else {
            serde_json::from_slice(&bytes).expect("request body is JSON")
        },
    }
}

/// One step of a recorded exchange.
#[derive(Clone)]
pub enum Reply {
    /// A whole answer.
    Json(u16, String),
    /// A watch answer: these newline-separated events, then the end.
    Events(String),
    /// A transport failure (the API server cannot be reached).
    Unreachable,
    /// A watch answered 200 that then never sends a byte nor ends (a
    /// connection lost without a reset), until the script is over.
    Silent,
    /// No answer at all, until the script is over.
    Hang,
}

/// Replays `script` in order: for each request, checks it is `method path`
/// and answers; returns every request seen. Panics (failing the test) on a
/// request out of script.
pub fn replay(mut handle: ApiHandle, script: Vec<Step>) -> JoinHandle<Vec<Seen>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        let mut silent = Vec::new();
        for (method, path, reply) in script {
            let (request, send) = handle
                .next_request()
                .await
                .expect("the client sent a request");
            let request = read(request).await;
            assert_eq!(
                (request.method.as_str(), request.path.as_str()),
                (method, path.as_str()),
                "request {} out of script (query {:?})",
                seen.len(),
                request.query
            );
            seen.push(request);
            match reply {
                Reply::Json(status, body) => send.send_response(answer(status, body)),
                Reply::Events(events) => {
                    let (response, tx) = streamed();
                    send.send_response(response);
                    tx.send(Bytes::from(events))
                        .await
                        .expect("the client reads the watch");
                }
                // Held past any test's horizon (paused time jumps to the
                // caller's timeout first), then dropped.
                Reply::Hang => drop(tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(24 * 3600)).await;
                    drop(send);
                })),
                Reply::Silent => {
                    let (response, tx) = streamed();
                    send.send_response(response);
                    silent.push(tx);
                }
                Reply::Unreachable => send.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
            }
        }
        seen
    })
}

/// JSON merge patch (RFC 7386), as the API server applies
/// `application/merge-patch+json`.
pub fn merge_patch(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match patch {
        serde_json::Value::Object(fields) => {
            if !target.is_object() {
                *target = serde_json::json!({});
            }
            let obj = target.as_object_mut().expect("object");
            for (k, v) in fields {
                if v.is_null() {
                    obj.remove(k);
                } else {
                    merge_patch(obj.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// One step of a script.
pub type Step = (&'static str, String, Reply);

/// `method path` answered `status` with the recorded file `file`.
pub fn json(method: &'static str, path: impl Into<String>, status: u16, file: &str) -> Step {
    (method, path.into(), Reply::Json(status, recorded(file)))
}

/// A watch (`GET path`) answered with the recorded events in `file`.
pub fn events(path: impl Into<String>, file: &str) -> Step {
    ("GET", path.into(), Reply::Events(recorded(file)))
}

/// `method path` failing in transport.
pub fn down(method: &'static str, path: impl Into<String>) -> Step {
    (method, path.into(), Reply::Unreachable)
}
