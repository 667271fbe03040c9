//! Where the CPU goes while a run is measured: the server's threads grouped
//! by name (its compute threads, whose libtorch/OpenMP workers inherit the
//! name, against everything else: HTTP, JSON, tokenization, batching) and
//! the load generator's own process, read from `/proc` (Linux; elsewhere
//! nothing is measured).

use std::path::Path;

use serde::Serialize;

/// Thread-name prefix of the server's compute threads (example-models'
/// `Executor`).
pub const COMPUTE_THREADS: &str = "convoy-compute";

/// CPU time of a server process and of this process at one instant, in
/// clock ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuSample {
    /// The server's compute threads (forward passes, with their intra-op
    /// workers).
    pub compute: u64,
    /// The server's other threads.
    pub server_other: u64,
    /// This process (the load generator).
    pub loadgen: u64,
}

/// CPU milliseconds per answered request over a measured window.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CpuPerRequest {
    /// Requests answered in the window.
    pub requests: u64,
    /// Forward passes (the server's compute threads).
    pub compute_ms: f64,
    /// The rest of the server: HTTP, JSON, pre/post-processing, batching.
    pub server_other_ms: f64,
    /// The load generator.
    pub loadgen_ms: f64,
}

impl CpuSample {
    /// Samples `server_pid`'s threads and this process; `None` where `/proc`
    /// cannot be read (not Linux, the process gone).
    pub fn take(server_pid: u32) -> Option<CpuSample> {
        let (compute, server_other) = threads(&Path::new("/proc").join(server_pid.to_string()))?;
        let loadgen = stat_ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?.1;
        Some(CpuSample {
            compute,
            server_other,
            loadgen,
        })
    }

    /// From `self` (earlier) to `later`, per request.
    pub fn per_request(&self, later: &CpuSample, requests: u64) -> Option<CpuPerRequest> {
        if requests == 0 {
            return None;
        }
        let ms =
            |a: u64, b: u64| b.saturating_sub(a) as f64 * 1e3 / ticks_per_s() / requests as f64;
        Some(CpuPerRequest {
            requests,
            compute_ms: ms(self.compute, later.compute),
            server_other_ms: ms(self.server_other, later.server_other),
            loadgen_ms: ms(self.loadgen, later.loadgen),
        })
    }
}

/// Clock ticks per second of `/proc`'s times: 100 on every Linux
/// configuration that matters (USER_HZ).
fn ticks_per_s() -> f64 {
    100.0
}

/// (compute, other) ticks of a process's threads.
fn threads(proc_dir: &Path) -> Option<(u64, u64)> {
    let mut totals = (0, 0);
    for task in std::fs::read_dir(proc_dir.join("task")).ok()? {
        let Ok(task) = task else { continue };
        // A thread may end between the listing and the read.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let Some((name, ticks)) = stat_ticks(&stat) else {
            continue;
        };
        if name.starts_with(COMPUTE_THREADS) {
            totals.0 += ticks;
        } else {
            totals.1 += ticks;
        }
    }
    Some(totals)
}

/// (name, utime + stime) from a `/proc/.../stat` line: the name sits in
/// parentheses and may hold spaces or parentheses itself, so the fields
/// are counted from the last `)`.
fn stat_ticks(stat: &str) -> Option<(&str, u64)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    let mut fields = stat.get(close + 1..)?.split_whitespace();
    // After the name: state (3), ppid ... utime is field 14, stime 15.
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some((name, utime + stime))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_stat_line_with_an_awkward_name() {
        let line = "4242 (convoy-compute) 0) S 1 4242 4242 0 -1 4194560 100 0 0 0 \
                    1234 56 0 0 20 0 3 0 100 0 0";
        assert_eq!(stat_ticks(line), Some(("convoy-compute) 0", 1290)));
        assert_eq!(stat_ticks("garbage"), None);
    }

    #[test]
    fn samples_this_process() {
        if !Path::new("/proc/self/task").exists() {
            eprintln!("skipped: no /proc");
            return;
        }
        let pid = std::process::id();
        let a = CpuSample::take(pid).expect("this process");
        // Burn a little CPU (a fixed number of steps).
        let mut x = 0u64;
        for _ in 0..20_000_000 {
            x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        }
        let b = CpuSample::take(pid).expect("this process");
        assert!(b.server_other >= a.server_other && b.loadgen >= a.loadgen);
        let per = a.per_request(&b, 10).unwrap();
        assert!(per.loadgen_ms >= 0.0 && per.compute_ms == 0.0);
        assert_eq!(a.per_request(&b, 0), None);
    }
}
