//! Bodies over `server.body_limit`: a declared `content-length` over the
//! limit is refused at once with a JSON 413, before any of the body is
//! read (a client that declares 50 MB and sends a few KB gets its answer,
//! not a timeout); a chunked body gets 413 when the limit is crossed. The
//! server answers normal requests afterwards. Over the v1 and v2 routes of
//! the identity model and of the real models.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use common::{fp32_row, start, Running, TEST_CONFIG};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// What a client declares: 50 MB, over both test configs' limits.
const FIFTY_MB: usize = 50 << 20;

/// How long the server may take to refuse.
const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// Reads one HTTP/1.1 response off `stream`: its status and body (bodies
/// with a `content-length`, which every error response here has).
async fn read_response(stream: &mut (impl AsyncReadExt + Unpin)) -> (u16, String) {
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let text = String::from_utf8_lossy(&answer).into_owned();
        if let Some(end) = text.find("\r\n\r\n") {
            let length = text[..end]
                .lines()
                .find_map(|l| {
                    l.to_ascii_lowercase()
                        .strip_prefix("content-length:")
                        .map(|v| v.trim().parse::<usize>().unwrap())
                })
                .expect("the answer has a content-length");
            if answer.len() >= end + 4 + length {
                let status = text.split(' ').nth(1).unwrap().parse().unwrap();
                return (status, text[end + 4..end + 4 + length].to_string());
            }
        }
        match stream.read(&mut buf).await {
            Ok(0) => panic!("connection closed mid-answer: {text:?}"),
            Err(e) => panic!("read failed ({e}) after {text:?}"),
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
}

/// Declares a 50 MB body, sends 4 KiB of it, and reads the answer.
async fn declare_fifty_mb(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {FIFTY_MB}\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    stream.write_all(&[b' '; 4096]).await.unwrap();
    tokio::time::timeout(ANSWER_WITHIN, read_response(&mut stream))
        .await
        .unwrap_or_else(|_| panic!("{path}: no answer within {ANSWER_WITHIN:?}"))
}

/// Streams a 50 MB chunked body (64 KiB chunks) until the server answers,
/// and returns the answer.
async fn chunked_fifty_mb(addr: SocketAddr, path: &str) -> (u16, String) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut rx, mut tx) = stream.into_split();
    let (answered, mut stop) = tokio::sync::oneshot::channel::<()>();
    let path_owned = path.to_string();
    let writer = tokio::spawn(async move {
        let head = format!(
            "POST {path_owned} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ntransfer-encoding: chunked\r\n\r\n"
        );
        tx.write_all(head.as_bytes()).await?;
        let mut chunk = format!("{:x}\r\n", 64 << 10).into_bytes();
        chunk.extend_from_slice(&[b' '; 64 << 10]);
        chunk.extend_from_slice(b"\r\n");
        for _ in 0..FIFTY_MB / (64 << 10) {
            tokio::select! {
                biased;
                _ = &mut stop => return Ok(()),
                written = tx.write_all(&chunk) => written?,
            }
        }
        tx.write_all(b"0\r\n\r\n").await
    });
    let answer = tokio::time::timeout(ANSWER_WITHIN, read_response(&mut rx))
        .await
        .unwrap_or_else(|_| panic!("{path} (chunked): no answer within {ANSWER_WITHIN:?}"));
    let _ = answered.send(());
    // The server may close the connection under the writer: a broken pipe
    // is the expected end of an upload that was refused.
    let _ = writer.await.unwrap();
    answer
}

/// Asserts `answer` is a 413 with a JSON `{"error": "..."}` saying the body is too large
/// (on v1 naming `body_limit`).
fn assert_refused(path: &str, (status, body): (u16, String)) {
    assert_eq!(status, 413, "{path}: {body}");
    let json: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
    let message = json["error"].as_str().unwrap_or_default();
    // v1 names the server's setting; KServe v2 says the size.
    let named = if path.starts_with("/v1/") {
        "body_limit"
    } else {
        "body"
    };
    assert!(
        message.contains(named),
        "{path}: the error should say the body is too large ({named}): {body}"
    );
}

async fn refuses_fifty_mb(s: &Running, path: &str, normal: &str) {
    assert_refused(path, declare_fifty_mb(s.addr, path).await);
    let r = s.post(path, normal.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
    assert_refused(path, chunked_fifty_mb(s.addr, path).await);
    let r = s.post(path, normal.to_string()).await;
    assert_eq!(r.status, StatusCode::OK, "{path}: {:?}", r.body);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identity_refuses_fifty_mb_bodies_at_once() {
    let s = start(TEST_CONFIG).await;
    refuses_fifty_mb(&s, "/v1/models/identity/infer", &fp32_row(&[1.0, 2.0])).await;
    refuses_fifty_mb(&s, "/v2/models/identity/infer", &fp32_row(&[1.0, 2.0])).await;
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_models_refuse_fifty_mb_bodies_at_once() {
    let dir = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models"));
    assert!(
        dir.join("minilm/1/model.json").exists(),
        "{} lacks the exported models: run scripts/setup.sh (make test does)",
        dir.display()
    );
    let config = include_str!("../config/models-test.toml").replace(
        "[server]\n",
        &format!("[server]\nmodels_dir = {:?}\n", dir.display().to_string()),
    );
    let s = start(&config).await;
    refuses_fifty_mb(&s, "/v1/models/minilm/embed", r#"["a short text"]"#).await;
    // resnet50 over v2: a declared 50 MB is refused; the normal request
    // after it is the real-model check that the server is still serving.
    let path = "/v2/models/resnet50/infer";
    assert_refused(path, declare_fifty_mb(s.addr, path).await);
    assert_refused(path, chunked_fifty_mb(s.addr, path).await);
    let r = s
        .post("/v1/models/minilm/embed", r#"["still serving"]"#)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{:?}", r.body);
    assert_eq!(s.get("/healthz").await.status, StatusCode::OK);
    s.shutdown().await;
}
