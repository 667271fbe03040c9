//! Run with `cargo run --release -p example-models --bin hooks-bench -- --model-dir models/minilm/1`
//!
//! What the allocator hooks cost: a model's forward passes in a loop with
//! its memory charged to a convoy-gpu-pool tenant (`Model::load_for_tenant`,
//! the hooks installed) against the same passes without (`Model::load`,
//! libtorch's own allocator). The hooks are process-wide once installed, so
//! each measurement runs in a child process of its own; the two modes
//! alternate, `--rounds` times each (off, on, then on, off...), so that a
//! drift of the machine hits both. Prints each run, the median items/s and
//! batch latency of each mode and their ratio (with the hooks over
//! without); `--json` prints one JSON object instead.

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use convoy_gpu_pool::{GpuPool, HostBackend, HostConfig, PoolConfig, Share};
use example_models::{hooks, synthetic_input, Device, LoadOptions, Model};
use serde::{Deserialize, Serialize};

type Error = Box<dyn std::error::Error + Send + Sync>;

#[derive(Parser, Debug)]
#[command(about = "Forward-pass throughput with the allocator hooks against without")]
struct Args {
    /// The model version directory (holding model.json).
    #[arg(long)]
    model_dir: PathBuf,
    /// Rows per batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens per row for text models.
    #[arg(long, default_value_t = 128)]
    seq_len: usize,
    /// Seconds of forward passes per run.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Runs of each mode.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `cpu` or `cuda` (the hooks then serve libtorch's CUDA memory from
    /// the tenant's pool; fp16).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// The tenant's share of the GPU with the hooks (with `--device cuda`).
    #[arg(long, default_value_t = 0.3)]
    fraction: f64,
    /// Print JSON.
    #[arg(long)]
    json: bool,
    /// Internal: run one measurement in this process.
    #[arg(long, value_enum, hide = true)]
    child: Option<Mode>,
}

#[derive(ValueEnum, Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Mode {
    /// libtorch's own allocator.
    Off,
    /// The tenant allocator hooks.
    On,
}

/// One measurement.
#[derive(Serialize, Deserialize, Debug, Clone)]
struct Run {
    mode: Mode,
    passes: usize,
    items_per_s: f64,
    p50_batch_ms: f64,
    /// CPU time (user and system, every thread of the process) per item:
    /// what the passes cost, less sensitive than wall time to other
    /// processes on a shared machine.
    cpu_ms_per_item: f64,
    /// Bytes charged to the tenant during the passes (with the hooks).
    charged_bytes: u64,
    /// Bytes libtorch allocated on threads with no tenant (with the hooks).
    unattributed_bytes: u64,
}

#[derive(Serialize, Debug)]
struct Report {
    model: String,
    device: String,
    batch_size: usize,
    threads: usize,
    runs: Vec<Run>,
    off_items_per_s: f64,
    on_items_per_s: f64,
    /// Items/s with the hooks over without (1.0: no cost).
    throughput_ratio: f64,
    off_p50_batch_ms: f64,
    on_p50_batch_ms: f64,
    /// Median batch latency with the hooks over without.
    latency_ratio: f64,
    off_cpu_ms_per_item: f64,
    on_cpu_ms_per_item: f64,
    /// Median CPU time per item with the hooks over without.
    cpu_ratio: f64,
}

fn device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "cuda" => Ok(Device::Cuda(0)),
        other => Err(format!("unknown device {other:?} (cpu, cuda)")),
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// The GPU's pool, with libtorch's CUDA memory served from it (installed
/// before libtorch's first CUDA allocation).
#[cfg(feature = "cuda")]
fn cuda_pool() -> Result<GpuPool, Error> {
    hooks::install_cuda()?;
    GpuPool::auto(PoolConfig::default())
}

#[cfg(not(feature = "cuda"))]
fn cuda_pool() -> Result<GpuPool, Error> {
    Err("--device cuda needs the cuda feature".into())
}

/// CPU time this process has used (user and system), seconds, from
/// `/proc/self/stat` (clock ticks of 10 ms).
fn cpu_seconds() -> Result<f64, Error> {
    let stat = std::fs::read_to_string("/proc/self/stat")?;
    // The fields after the command name (which may hold spaces).
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| -> Result<f64, Error> {
        Ok(fields
            .get(i)
            .ok_or("a short /proc/self/stat")?
            .parse::<f64>()?)
    };
    // utime and stime: fields 14 and 15, 12 and 13 after the name.
    Ok((ticks(11)? + ticks(12)?) / 100.0)
}

/// One measurement in this process.
fn measure(args: &Args, mode: Mode) -> Result<Run, Error> {
    let device = device(&args.device)?;
    let opts = LoadOptions {
        device,
        intra_op_threads: args.threads,
        max_batch_size: args.batch_size,
        half: device != Device::Cpu,
        ..LoadOptions::default()
    };
    // The pool and the tenant live as long as the model.
    let (model, tenant, _pool) = match mode {
        Mode::Off => (Model::load(&args.model_dir, &opts)?, None, None),
        Mode::On => {
            let pool = if device == Device::Cpu {
                let host = HostBackend::new(HostConfig::with_capacity(16 << 30));
                GpuPool::from_arc(Arc::new(host), PoolConfig::default().headroom(1.0), None)?
            } else {
                cuda_pool()?
            };
            let share = if device == Device::Cpu {
                Share::bytes(8 << 30)
            } else {
                Share::fraction(args.fraction)
            };
            let tenant = pool.tenant("bench", share)?;
            let model = Model::load_for_tenant(&args.model_dir, &opts, tenant.clone())?;
            (model, Some(tenant), Some(pool))
        }
    };
    let batch = vec![synthetic_input(
        model.manifest(),
        args.batch_size,
        args.seq_len,
    )];
    for _ in 0..3 {
        model.forward_blocking(batch.clone())?;
    }
    let before = (hooks::stats(), hooks::charged_bytes("bench"));
    let cpu = cpu_seconds()?;
    let lat = model.time_passes(&batch, Duration::from_secs_f64(args.seconds))?;
    let total: f64 = lat.iter().sum();
    let cpu = cpu_seconds()? - cpu;
    let after = hooks::stats();
    drop(tenant);
    Ok(Run {
        mode,
        passes: lat.len(),
        items_per_s: (args.batch_size * lat.len()) as f64 / total,
        cpu_ms_per_item: cpu * 1e3 / (args.batch_size * lat.len()) as f64,
        p50_batch_ms: median(lat) * 1e3,
        charged_bytes: hooks::charged_bytes("bench") - before.1,
        unattributed_bytes: after.unattributed_bytes - before.0.unattributed_bytes,
    })
}

fn main() -> Result<(), Error> {
    let args = Args::parse();
    device(&args.device)?;
    if args.batch_size == 0 || args.rounds == 0 || args.seconds <= 0.0 {
        return Err("--batch-size, --rounds and --seconds must be positive".into());
    }
    if let Some(mode) = args.child {
        println!("{}", serde_json::to_string(&measure(&args, mode)?)?);
        return Ok(());
    }
    let exe = std::env::current_exe()?;
    let mut runs = Vec::new();
    for round in 0..args.rounds {
        let order = if round % 2 == 0 {
            [Mode::Off, Mode::On]
        } else {
            [Mode::On, Mode::Off]
        };
        for mode in order {
            let out = Command::new(&exe)
                .args(std::env::args_os().skip(1))
                .arg("--child")
                .arg(match mode {
                    Mode::Off => "off",
                    Mode::On => "on",
                })
                .output()?;
            if !out.status.success() {
                return Err(format!(
                    "the {mode:?} run failed ({}): {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                )
                .into());
            }
            let line = String::from_utf8_lossy(&out.stdout);
            let run: Run = serde_json::from_str(line.trim())?;
            if !args.json {
                eprintln!(
                    "round {round} hooks {:>3}: {:>8.2} items/s  p50 {:>8.2} ms  cpu {:>7.2} ms/item  ({} passes, {} bytes charged, {} unattributed)",
                    format!("{mode:?}").to_lowercase(),
                    run.items_per_s,
                    run.p50_batch_ms,
                    run.cpu_ms_per_item,
                    run.passes,
                    run.charged_bytes,
                    run.unattributed_bytes
                );
            }
            runs.push(run);
        }
    }
    let of = |mode: Mode, f: fn(&Run) -> f64| {
        median(runs.iter().filter(|r| r.mode == mode).map(f).collect())
    };
    let (off, on) = (
        of(Mode::Off, |r| r.items_per_s),
        of(Mode::On, |r| r.items_per_s),
    );
    let (off_ms, on_ms) = (
        of(Mode::Off, |r| r.p50_batch_ms),
        of(Mode::On, |r| r.p50_batch_ms),
    );
    let (off_cpu, on_cpu) = (
        of(Mode::Off, |r| r.cpu_ms_per_item),
        of(Mode::On, |r| r.cpu_ms_per_item),
    );
    let report = Report {
        model: args
            .model_dir
            .parent()
            .and_then(|p| p.file_name())
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned()),
        device: args.device.clone(),
        batch_size: args.batch_size,
        threads: args.threads,
        runs,
        off_items_per_s: off,
        on_items_per_s: on,
        throughput_ratio: on / off,
        off_p50_batch_ms: off_ms,
        on_p50_batch_ms: on_ms,
        latency_ratio: on_ms / off_ms,
        off_cpu_ms_per_item: off_cpu,
        on_cpu_ms_per_item: on_cpu,
        cpu_ratio: on_cpu / off_cpu,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "{} on {} batch {} ({} threads): {:.2} items/s with the hooks, {:.2} without: \
             throughput ratio {:.4}, p50 batch {:.2} ms against {:.2} ms: latency ratio {:.4}, \
             CPU {:.3} ms/item against {:.3}: CPU ratio {:.4}",
            report.model,
            report.device,
            report.batch_size,
            report.threads,
            on,
            off,
            report.throughput_ratio,
            on_ms,
            off_ms,
            report.latency_ratio,
            on_cpu,
            off_cpu,
            report.cpu_ratio
        );
    }
    Ok(())
}
