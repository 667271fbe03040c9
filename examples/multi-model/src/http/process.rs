//! Process and runtime gauges, refreshed at every `/metrics` scrape: what
//! a soak test (or an alert) watches for growth.
//!
//! - `process_resident_memory_bytes`: resident memory (`VmRSS` of
//!   `/proc/self/status`), the Prometheus client libraries' name;
//! - `process_open_fds`: open file descriptors (entries of `/proc/self/fd`);
//! - `convoy_runtime_alive_tasks`: tasks alive on the server's tokio runtime.
//!
//! The first two exist only where `/proc` does (Linux).

/// Sets the three gauges to their values now.
pub(crate) fn record() {
    if let Some(bytes) = resident_bytes() {
        metrics::gauge!("process_resident_memory_bytes").set(bytes as f64);
    }
    if let Some(fds) = open_fds() {
        metrics::gauge!("process_open_fds").set(fds as f64);
    }
    if let Ok(runtime) = tokio::runtime::Handle::try_current() {
        metrics::gauge!("convoy_runtime_alive_tasks")
            .set(runtime.metrics().num_alive_tasks() as f64);
    }
}

/// Resident memory of this process, bytes.
fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()?;
    Some(kib * 1024)
}

/// Open file descriptors of this process.
fn open_fds() -> Option<usize> {
    // The directory handle itself is one of the entries read.
    Some(
        std::fs::read_dir("/proc/self/fd")
            .ok()?
            .count()
            .saturating_sub(1),
    )
}
