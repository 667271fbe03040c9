//! NVIDIA Triton's Python clients (`tritonclient[http]` and
//! `tritonclient[grpc]` from the project's `.venv`) on the real models
//! over KServe v2: ResNet-50, MiniLM and YOLOv8n with binary and JSON
//! tensors over HTTP and over gRPC, each answer checked against the
//! PyTorch reference outputs in `models/`. The checks are in
//! `scripts/python/tritonclient_models.py`.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::start;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_runs_the_real_models() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        python.display()
    );
    let models = root.join("models");
    assert!(
        ["resnet50", "minilm", "yolov8n"]
            .iter()
            .all(|m| models.join(m).join("1/reference.json").exists()),
        "{} lacks the exported models: run scripts/setup.sh (make test does)",
        models.display()
    );
    // A YOLOv8n image as a JSON tensor is 1.2 million numbers (about 25 MB
    // of JSON), over the test config's 8 MiB limit.
    let config = include_str!("../config/models-test.toml")
        .replace(
            "[server]\n",
            &format!(
                "[server]\nmodels_dir = {:?}\n",
                models.display().to_string()
            ),
        )
        .replace("body_limit = 8388608", "body_limit = 67108864");
    let s = start(&config).await;
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
        .arg(root.join("scripts/python/tritonclient_models.py"))
        .arg(s.addr.to_string())
        .arg(grpc_addr.to_string())
        .arg(&models)
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
    assert!(stdout.contains("tritonclient models: all checks passed"));
    let _ = stop.send(());
    grpc.await.unwrap().unwrap();
    s.shutdown().await;
}
