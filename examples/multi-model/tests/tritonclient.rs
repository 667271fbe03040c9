//! NVIDIA Triton's own Python clients (`tritonclient[http]` and
//! `tritonclient[grpc]` from the project's `.venv`) against the server's
//! KServe v2 endpoints, unchanged: the checks are in
//! `scripts/python/tritonclient_check.py`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::{start, TEST_CONFIG};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_and_grpc_work_unchanged() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        python.display()
    );
    let s = start(TEST_CONFIG).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = Arc::clone(&s.server);
    let grpc = tokio::spawn(async move {
        server
            .serve_grpc(listener, async {
                let _ = stopped.await;
            })
            .await
    });
    let out = tokio::process::Command::new(&python)
        .arg(root.join("scripts/python/tritonclient_check.py"))
        .arg(s.addr.to_string())
        .arg(grpc_addr.to_string())
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "tritonclient checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("tritonclient: all checks passed"));
    let _ = stop.send(());
    grpc.await.unwrap().unwrap();
    s.shutdown().await;
}
