//! A real etcd on loopback for the tests: free ports, a temporary data
//! directory, bounded waits, killed on drop.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::time::Instant;

const ETCD: &str = "/usr/bin/etcd";

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind a loopback port")
        .port()
}

/// An etcd process with its own data directory.
pub struct Etcd {
    child: Option<Child>,
    client_port: u16,
    peer_port: u16,
    dir: PathBuf,
    log: PathBuf,
}

impl Etcd {
    /// Starts etcd in a fresh temporary data directory and waits (at most
    /// 20 s) until it answers.
    pub fn start() -> Etcd {
        assert!(
            Path::new(ETCD).exists(),
            "{ETCD} is missing: run scripts/test_setup.sh (it installs Debian's etcd-server)"
        );
        let dir = std::env::temp_dir().join(format!(
            "convoy-remote-etcd-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("create the data directory");
        let mut etcd = Etcd {
            child: None,
            client_port: free_port(),
            peer_port: free_port(),
            log: dir.join("etcd.log"),
            dir,
        };
        etcd.restart();
        etcd
    }

    /// The client URL.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Kills etcd at once (SIGKILL), keeping its data directory.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts etcd again on the same ports and data directory (after
    /// [`kill`](Self::kill)), waiting until it answers.
    pub fn restart(&mut self) {
        self.kill();
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the etcd log");
        let child = Command::new(ETCD)
            .arg("--name=convoy-test")
            .arg(format!("--data-dir={}", self.dir.join("data").display()))
            .arg(format!("--listen-client-urls={}", self.url()))
            .arg(format!("--advertise-client-urls={}", self.url()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=convoy-test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone the log handle"))
            .stderr(log)
            .spawn()
            .expect("start etcd");
        self.child = Some(child);
        self.wait_ready();
    }

    /// Deletes the data directory's contents: the next restart is a new
    /// cluster (revisions from 1 again).
    pub fn wipe(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }

    fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        // etcd answers /health with {"health":"true"} once it has a leader.
        while Instant::now() < deadline {
            if let Ok(out) = health(self.client_port) {
                if out.contains("\"health\":\"true\"") {
                    return;
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        panic!("etcd did not become healthy within 20 s; its log:\n{log}");
    }
}

fn health(port: u16) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"GET /health HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
