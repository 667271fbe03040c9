//! The `multi-model` binary: the line the demo waits for, and a clean exit
//! on SIGTERM.

use std::path::Path;

use testkit::ServerProcess;

/// Starts the server in `cwd` with `--config config` on free ports, checks
/// the addresses it prints once every model is loaded and that it listens,
/// then stops it with SIGTERM and expects a clean exit.
#[cfg(unix)]
fn serve_then_stop(cwd: &Path, config: &str) {
    let server = ServerProcess::command(env!("CARGO_BIN_EXE_multi-model"))
        .current_dir(cwd)
        .args(["--config", config])
        .args(["--addr", "127.0.0.1:0", "--grpc-addr", "127.0.0.1:0"])
        .start()
        .unwrap_or_else(|e| panic!("started in {} with --config {config}: {e}", cwd.display()));
    let grpc = server.grpc().expect("the gRPC address is printed first");
    assert!(grpc.starts_with("http://127.0.0.1:"), "{grpc}");
    let http = server.base();
    assert!(http.starts_with("http://127.0.0.1:"), "{http}");
    let port: u16 = http.rsplit(':').next().unwrap().parse().unwrap();
    assert!(std::net::TcpStream::connect(("127.0.0.1", port)).is_ok());
    let status = server.terminate();
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
    let out = ServerProcess::command(env!("CARGO_BIN_EXE_multi-model"))
        .arg("--config")
        .arg(&path)
        .output();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("line 5") && err.contains("at least 1"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}
