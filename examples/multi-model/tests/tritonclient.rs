//! NVIDIA Triton's own Python clients (`tritonclient[http]` and
//! `tritonclient[grpc]` from the project's `.venv`) against the server's
//! KServe v2 endpoints, unchanged:
//!
//! - on the identity model, every datatype, concurrency and the errors
//!   (`scripts/python/tritonclient_check.py`);
//! - on the real models, ResNet-50, MiniLM and YOLOv8n with binary and
//!   JSON tensors over HTTP and over gRPC, each answer checked against the
//!   PyTorch reference outputs in `models/`
//!   (`scripts/python/tritonclient_models.py`).

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use common::{start, TEST_CONFIG};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts `config` over HTTP and gRPC, runs
/// `scripts/python/<script> HTTP_ADDR GRPC_ADDR [args]` with the project's
/// Python, and asserts it printed `passed`.
async fn run_script(config: &str, script: &str, args: &[OsString], passed: &str) {
    let python = root().join(".venv/bin/python3");
    assert!(
        python.is_file(),
        "{} is missing: run scripts/setup.sh (make test does)",
        python.display()
    );
    let s = start(config).await;
    let grpc = s.serve_grpc().await;
    let out = tokio::process::Command::new(&python)
        .arg(root().join("scripts/python").join(script))
        .arg(s.addr.to_string())
        .arg(grpc.addr.to_string())
        .args(args)
        .output()
        .await
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    println!("{stdout}");
    assert!(
        out.status.success(),
        "{script} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(passed));
    grpc.shutdown().await;
    s.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_http_and_grpc_work_unchanged() {
    run_script(
        TEST_CONFIG,
        "tritonclient_check.py",
        &[],
        "tritonclient: all checks passed",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tritonclient_runs_the_real_models() {
    let models = root().join("models");
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
    run_script(
        &config,
        "tritonclient_models.py",
        &[models.into_os_string()],
        "tritonclient models: all checks passed",
    )
    .await;
}
