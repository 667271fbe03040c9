//! Test support for the examples' integration tests: [`ServerProcess`], a
//! server binary run as a child process: started with its arguments,
//! waited for until it prints where it listens, probed through `/proc`
//! (resident memory, open descriptors), stopped with `SIGTERM` or killed
//! when dropped.
//!
//! The protocol it expects of the binary is the one `multi-model` keeps:
//! once serving, it prints `grpc listening on ADDR` (when it serves gRPC)
//! and then `listening on http://ADDR` on stdout; its log goes to stderr.
//!
//! ```no_run
//! use testkit::ServerProcess;
//!
//! let server = ServerProcess::command("target/debug/multi-model")
//!     .args(["--config", "config/test.toml", "--addr", "127.0.0.1:0"])
//!     .start()
//!     .unwrap_or_else(|e| panic!("{e}"));
//! println!("serving on {}", server.base());
//! let status = server.terminate();
//! assert!(status.success());
//! ```

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::Duration;

use tokio::time::Instant;

/// How long [`Launch::start`] waits for the address lines by default.
pub const START_TIMEOUT: Duration = Duration::from_secs(180);
/// How long [`ServerProcess::terminate`] waits for the exit after `SIGTERM`.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(30);

/// A server binary to start: its program, arguments, folder and
/// environment.
#[derive(Debug)]
pub struct Launch {
    command: Command,
    inherit_stderr: bool,
    timeout: Duration,
}

/// Why a server did not start.
#[derive(Debug)]
pub struct StartError {
    message: String,
}

impl fmt::Display for StartError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StartError {}

/// A running server binary; killed (and reaped) when dropped.
#[derive(Debug)]
pub struct ServerProcess {
    child: Child,
    base: String,
    grpc: Option<String>,
    started: Instant,
    ready_after: Duration,
    log: Option<PathBuf>,
}

impl ServerProcess {
    /// A server to start from the binary at `program` (in a test,
    /// `env!("CARGO_BIN_EXE_<name>")`).
    pub fn command(program: impl AsRef<OsStr>) -> Launch {
        let mut command = Command::new(program);
        command.env("RUST_LOG", "warn");
        Launch {
            command,
            inherit_stderr: false,
            timeout: START_TIMEOUT,
        }
    }

    /// Its HTTP base URL, `http://127.0.0.1:PORT`.
    pub fn base(&self) -> &str {
        &self.base
    }

    /// Its gRPC endpoint, `http://127.0.0.1:PORT`, if it announced one.
    pub fn grpc(&self) -> Option<&str> {
        self.grpc.as_deref()
    }

    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// When it was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// How long it took from its start to its address lines (every model
    /// loaded and warmed).
    pub fn ready_after(&self) -> Duration {
        self.ready_after
    }

    /// A copy-able handle that reads the process's figures from `/proc`.
    pub fn probe(&self) -> Probe {
        Probe { pid: self.pid() }
    }

    /// What it wrote to stderr so far (empty when stderr is inherited).
    pub fn log(&self) -> String {
        self.log
            .as_ref()
            .and_then(|p| std::fs::read_to_string(p).ok())
            .unwrap_or_default()
    }

    /// Stops it with `SIGTERM` (a graceful shutdown) and returns how it
    /// exited; kills it if it has not exited within [`STOP_TIMEOUT`].
    pub fn terminate(mut self) -> ExitStatus {
        let sent = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        assert!(
            sent.as_ref().is_ok_and(ExitStatus::success),
            "kill -TERM {}: {sent:?}",
            self.pid()
        );
        let deadline = Instant::now() + STOP_TIMEOUT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                _ => panic!(
                    "the server did not exit within {STOP_TIMEOUT:?} of SIGTERM: {}",
                    self.log()
                ),
            }
        }
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(log) = &self.log {
            let _ = std::fs::remove_file(log);
        }
    }
}

impl Launch {
    /// Adds an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Self {
        self.command.arg(arg);
        self
    }

    /// Adds arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.command.args(args);
        self
    }

    /// Runs it in `dir` (relative paths in its arguments resolve there).
    pub fn current_dir(mut self, dir: impl AsRef<Path>) -> Self {
        self.command.current_dir(dir);
        self
    }

    /// Sets an environment variable (`RUST_LOG` is `warn` unless set).
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Self {
        self.command.env(key, value);
        self
    }

    /// Its log goes to the test's stderr instead of a file (shown with
    /// the test's output).
    pub fn inherit_stderr(mut self) -> Self {
        self.inherit_stderr = true;
        self
    }

    /// How long [`Self::start`] waits for the address lines.
    pub fn start_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Runs it to its exit (for a start that must fail) and returns its
    /// status and output.
    pub fn output(mut self) -> Output {
        self.command
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("{:?} does not run: {e}", self.command.get_program()))
    }

    /// Starts it and waits (at most the start timeout) until it prints
    /// `listening on URL`, taking a `grpc listening on ADDR` line before
    /// it. Its stdout is read to its end meanwhile, so it never blocks on
    /// a full pipe.
    pub fn start(mut self) -> Result<ServerProcess, StartError> {
        let program: OsString = self.command.get_program().to_owned();
        let log = (!self.inherit_stderr).then(log_path);
        let stderr = match &log {
            Some(path) => Stdio::from(std::fs::File::create(path).map_err(|e| StartError {
                message: format!("cannot create the log {}: {e}", path.display()),
            })?),
            None => Stdio::inherit(),
        };
        let started = Instant::now();
        let mut child = self
            .command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| StartError {
                message: format!("{program:?} does not start: {e}"),
            })?;
        let stdout = child.stdout.take().expect("stdout is piped");
        let (lines, announced) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // Once the test stops listening, the rest is drained.
                let _ = lines.send(line);
            }
        });
        let mut server = ServerProcess {
            child,
            base: String::new(),
            grpc: None,
            started,
            ready_after: Duration::ZERO,
            log,
        };
        let deadline = started + self.timeout;
        let fail = |server: &mut ServerProcess, why: String| {
            let exited = server.child.try_wait().ok().flatten();
            let status = exited.map_or("still running".to_owned(), |s| s.to_string());
            Err(StartError {
                message: format!("{program:?} {why} ({status}); its log:\n{}", server.log()),
            })
        };
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match announced.recv_timeout(left) {
                Ok(line) => line,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let why = format!("did not say where it listens within {:?}", self.timeout);
                    return fail(&mut server, why);
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let _ = server.child.wait();
                    return fail(&mut server, "exited before it listened".into());
                }
            };
            let line = line.trim();
            if let Some(addr) = line.strip_prefix("grpc listening on ") {
                server.grpc = Some(format!("http://{addr}"));
            } else if let Some(url) = line.strip_prefix("listening on ") {
                server.base = url.to_owned();
                server.ready_after = started.elapsed();
                return Ok(server);
            } else {
                return fail(&mut server, format!("printed an unexpected line {line:?}"));
            }
        }
    }
}

/// A fresh log file for one server's stderr.
fn log_path() -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    std::env::temp_dir().join(format!(
        "convoy-server-{}-{}.log",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ))
}

/// A process's figures as Linux's `/proc` shows them.
#[derive(Debug, Clone, Copy)]
pub struct Probe {
    pid: u32,
}

impl Probe {
    /// The process `pid`.
    pub fn new(pid: u32) -> Self {
        Self { pid }
    }

    /// Resident memory, bytes (`VmRSS` of `/proc/PID/status`).
    pub fn rss(self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("/proc/{}/status: {e}", self.pid));
        vm_rss_kib(&status).expect("VmRSS in /proc/PID/status") * 1024
    }

    /// Peak resident memory since the start or the last
    /// [`reset_peak_rss`](Self::reset_peak_rss), bytes (`VmHWM` of
    /// `/proc/PID/status`): the kernel's own high-water mark, so no peak
    /// between two reads is missed.
    pub fn peak_rss(self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .unwrap_or_else(|e| panic!("/proc/{}/status: {e}", self.pid));
        status_kib(&status, "VmHWM:").expect("VmHWM in /proc/PID/status") * 1024
    }

    /// Sets the peak resident memory back to the resident memory now
    /// (writes `5` to `/proc/PID/clear_refs`).
    pub fn reset_peak_rss(self) {
        let path = format!("/proc/{}/clear_refs", self.pid);
        std::fs::write(&path, "5").unwrap_or_else(|e| panic!("{path}: {e}"));
    }

    /// Open file descriptors (the entries of `/proc/PID/fd`).
    pub fn fds(self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid))
            .unwrap_or_else(|e| panic!("/proc/{}/fd: {e}", self.pid))
            .count()
    }
}

/// `VmRSS` of a `/proc/PID/status` text, KiB.
fn vm_rss_kib(status: &str) -> Option<u64> {
    status_kib(status, "VmRSS:")
}

/// The `field` line (`VmRSS:`, `VmHWM:`) of a `/proc/PID/status` text, KiB.
fn status_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().strip_suffix("kB"))
        .and_then(|v| v.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9 kB\nVmRSS:\t   12345 kB\nThreads:\t3\n";
        assert_eq!(vm_rss_kib(status), Some(12345));
        assert_eq!(vm_rss_kib("Name:\tx\n"), None);
        let status = "VmHWM:\t  777 kB\nVmRSS:\t   12 kB\n";
        assert_eq!(status_kib(status, "VmHWM:"), Some(777));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn probes_a_process() {
        let mut sleeper = Command::new("sleep")
            .arg("30")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let probe = Probe::new(sleeper.id());
        // stdin, stdout and stderr at least (and what the test harness
        // lets it inherit).
        assert!(probe.fds() >= 3, "{}", probe.fds());
        assert!(probe.rss() > 0);
        assert!(probe.peak_rss() >= probe.rss());
        probe.reset_peak_rss();
        assert!(probe.peak_rss() > 0);
        sleeper.kill().unwrap();
        sleeper.wait().unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn takes_the_announced_addresses() {
        let server = ServerProcess::command("sh")
            .arg("-c")
            .arg("echo 'grpc listening on 127.0.0.1:2'; echo 'listening on http://127.0.0.1:1'; echo more; exec sleep 30")
            .start()
            .unwrap();
        assert_eq!(server.base(), "http://127.0.0.1:1");
        assert_eq!(server.grpc(), Some("http://127.0.0.1:2"));
        let status = server.terminate();
        assert!(!status.success(), "killed by SIGTERM: {status}");
    }

    #[cfg(unix)]
    #[test]
    fn says_why_a_server_did_not_start() {
        let exited = ServerProcess::command("sh")
            .arg("-c")
            .arg("echo 'no models' >&2; exit 3")
            .start()
            .unwrap_err()
            .to_string();
        assert!(
            exited.contains("exited before it listened") && exited.contains("no models"),
            "{exited}"
        );
        let odd = ServerProcess::command("sh")
            .arg("-c")
            .arg("echo hello; exec sleep 30")
            .start()
            .unwrap_err()
            .to_string();
        assert!(odd.contains("unexpected line \"hello\""), "{odd}");
        let silent = ServerProcess::command("sh")
            .arg("-c")
            .arg("exec sleep 30")
            .start_timeout(Duration::from_millis(200))
            .start()
            .unwrap_err()
            .to_string();
        assert!(silent.contains("within 200ms"), "{silent}");
    }
}
