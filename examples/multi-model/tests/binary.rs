//! The `multi-model` binary: the line the demo waits for, and a clean exit
//! on SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

/// Starts the server in `cwd` with `--config config` on free ports, checks
/// the lines it prints once every model is loaded and that it listens,
/// then stops it with SIGTERM and expects a clean exit.
#[cfg(unix)]
fn serve_then_stop(cwd: &Path, config: &str) {
    // The server's log goes to a file: a pipe nobody drains could fill and
    // block it.
    let log_path = std::env::temp_dir().join(format!(
        "convoy-binary-test-{}-{}.log",
        std::process::id(),
        config.len()
    ));
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_multi-model"))
        .current_dir(cwd)
        .args([
            "--config",
            config,
            "--addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let Some(Ok(grpc)) = lines.next() else {
        let status = child.wait().unwrap();
        panic!(
            "started in {} with --config {config}, the server exited ({status}): {}",
            cwd.display(),
            std::fs::read_to_string(&log_path).unwrap_or_default()
        );
    };
    assert!(grpc.starts_with("grpc listening on 127.0.0.1:"), "{grpc}");
    let http = lines.next().unwrap().unwrap();
    assert!(http.starts_with("listening on http://127.0.0.1:"), "{http}");
    let port: u16 = http.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    let _ = std::fs::remove_file(&log_path);
    assert!(status.success(), "{status}");
}

#[cfg(unix)]
#[test]
fn prints_where_it_listens_and_exits_cleanly_on_sigterm() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/test.toml");
    serve_then_stop(&std::env::temp_dir(), config);
}

/// The start commands the READMEs and config headers give, each run from
/// the folder they name: from `examples/` (examples/README.md, demo.toml)
/// and from the repository root (main.rs), both with the real models.
#[cfg(unix)]
#[test]
fn the_documented_start_commands_work_from_their_folders() {
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = examples.join("..");
    assert!(
        root.join("models/resnet50/1/model.json").exists(),
        "models/ lacks the exported models: run scripts/setup.sh (make test does)"
    );
    serve_then_stop(&examples, "multi-model/config/demo.toml");
    serve_then_stop(&root, "examples/multi-model/config/demo.toml");
}

#[test]
fn a_bad_config_fails_at_start_naming_the_line() {
    let dir = std::env::temp_dir().join(format!("multi-model-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.toml");
    std::fs::write(
        &path,
        "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\n[deployment.batching]\nmax_batch_size = 0\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_multi-model"))
        .arg("--config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 5") && err.contains("at least 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
