//! A real MLflow tracking server for tests (from the project's `.venv`,
//! installed by `scripts/setup.sh`): started on a free loopback port with a
//! sqlite store and a local artifact root, in its own process group, killed
//! on drop. Shared by the registry crate's tests and the server's.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use example_registry::MlflowClient;
use tokio::time::Instant;

pub fn mlflow_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/mlflow");
    assert!(
        bin.is_file(),
        "{} is missing: run scripts/setup.sh first (make test does)",
        bin.display()
    );
    bin
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn healthy(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(b"GET /health HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 12 && buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// A tracking server; killed on drop.
pub struct Mlflow {
    child: Option<Child>,
    /// Its port on 127.0.0.1.
    pub port: u16,
    dir: PathBuf,
}

impl Mlflow {
    pub fn start(dir: &Path) -> Self {
        let mut m = Mlflow {
            child: None,
            port: free_port(),
            dir: dir.to_owned(),
        };
        m.restart();
        m
    }

    pub fn restart(&mut self) {
        let child = Command::new(mlflow_bin())
            .arg("server")
            .arg("--backend-store-uri")
            .arg(format!("sqlite:///{}/mlflow.db", self.dir.display()))
            .arg("--artifacts-destination")
            .arg(self.dir.join("artifacts"))
            .args(["--host", "127.0.0.1", "--workers", "1", "--port"])
            .arg(self.port.to_string())
            // No background job workers: the registry needs none of them.
            .env("MLFLOW_SERVER_ENABLE_JOB_EXECUTION", "false")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so stopping it stops its workers too.
            .process_group(0)
            .spawn()
            .expect("mlflow server starts");
        self.child = Some(child);
        let started = Instant::now();
        while !healthy(self.port) {
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "mlflow server not healthy after 120 s"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{}", c.id())])
                .status();
            let _ = c.kill();
            let _ = c.wait();
        }
        // Its workers may linger briefly; wait until the port is free.
        let started = Instant::now();
        while healthy(self.port) && started.elapsed() < Duration::from_secs(30) {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn client(&self) -> MlflowClient {
        MlflowClient::new(&format!("http://127.0.0.1:{}", self.port))
            .unwrap()
            .with_timeout(Duration::from_secs(10))
    }
}

impl Drop for Mlflow {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Mlflow {
    /// Its base URI.
    pub fn uri(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}
