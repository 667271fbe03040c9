//! The `multi-model` binary: the line the demo waits for, and a clean exit
//! on SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

#[cfg(unix)]
#[test]
fn prints_where_it_listens_and_exits_cleanly_on_sigterm() {
    let config = concat!(env!("CARGO_MANIFEST_DIR"), "/config/test.toml");
    let mut child = Command::new(env!("CARGO_BIN_EXE_multi-model"))
        .args([
            "--config",
            config,
            "--addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let grpc = lines.next().unwrap().unwrap();
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
    assert!(status.success(), "{status}");
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
