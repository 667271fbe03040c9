//! Run with `cargo run --release -p example-models --bin raw-bench -- --model-dir models/resnet50/1`
//!
//! The model's raw offline throughput: forward passes in a loop in one
//! process, no server, at each batch size; items/s, the median batch latency
//! and the best batch size. `--json` prints one JSON object instead of a
//! table.

use std::path::PathBuf;
use std::time::Duration;

use tokio::time::Instant;

use clap::Parser;
use example_models::{synthetic_input, Device, LoadOptions, Model};
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "Raw forward-pass throughput of a model at several batch sizes")]
struct Args {
    /// The model version directory (holding model.json).
    #[arg(long)]
    model_dir: PathBuf,
    /// Comma-separated batch sizes.
    #[arg(long, default_value = "1,2,4,8,16,32", value_delimiter = ',')]
    batch_sizes: Vec<usize>,
    /// Seconds of forward passes per batch size.
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// libtorch intra-op threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// `cpu`, `cuda`, `cuda:N` or `auto`.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// fp16 on CUDA.
    #[arg(long)]
    half: bool,
    /// Tokens per text for text models.
    #[arg(long, default_value_t = 16)]
    seq_len: usize,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize, Debug)]
struct Row {
    batch_size: usize,
    iterations: usize,
    items_per_s: f64,
    p50_batch_ms: f64,
    min_batch_ms: f64,
}

#[derive(Serialize, Debug)]
struct Report {
    model: String,
    version: String,
    device: String,
    half: bool,
    threads: usize,
    seq_len: Option<usize>,
    results: Vec<Row>,
    best: Option<Best>,
}

#[derive(Serialize, Debug)]
struct Best {
    batch_size: usize,
    items_per_s: f64,
}

fn parse_device(s: &str) -> Result<Device, String> {
    match s {
        "cpu" => Ok(Device::Cpu),
        "auto" => Ok(Device::auto()),
        "cuda" => Ok(Device::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|i| i.parse().ok())
            .map(Device::Cuda)
            .ok_or_else(|| format!("unknown device {other:?} (cpu, cuda, cuda:N, auto)")),
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    let device = parse_device(&args.device)?;
    if args.batch_sizes.is_empty() || args.batch_sizes.contains(&0) {
        return Err("--batch-sizes must list positive sizes".into());
    }
    let max = args.batch_sizes.iter().copied().max().unwrap_or(1);
    let model = Model::load(
        &args.model_dir,
        &LoadOptions {
            device,
            intra_op_threads: args.threads,
            max_batch_size: max,
            half: args.half,
            queue_capacity: 1,
        },
    )?;
    let text = model
        .manifest()
        .inputs
        .iter()
        .any(|s| s.shape[1..].contains(&-1));
    let mut results = Vec::new();
    for &b in &args.batch_sizes {
        let item = synthetic_input(model.manifest(), b, args.seq_len);
        model.forward_blocking(vec![item.clone()])?;
        let budget = Duration::from_secs_f64(args.seconds);
        let start = Instant::now();
        let mut lat = Vec::new();
        while start.elapsed() < budget || lat.is_empty() {
            let t = Instant::now();
            model.forward_blocking(vec![item.clone()])?;
            lat.push(t.elapsed().as_secs_f64());
        }
        let elapsed: f64 = lat.iter().sum();
        lat.sort_by(f64::total_cmp);
        let row = Row {
            batch_size: b,
            iterations: lat.len(),
            items_per_s: (b * lat.len()) as f64 / elapsed,
            p50_batch_ms: lat[lat.len() / 2] * 1e3,
            min_batch_ms: lat[0] * 1e3,
        };
        if !args.json {
            eprintln!(
                "{:>10} batch {:>3}: {:>9.1} items/s  p50 {:>8.2} ms  min {:>8.2} ms  ({} passes)",
                model.manifest().name,
                row.batch_size,
                row.items_per_s,
                row.p50_batch_ms,
                row.min_batch_ms,
                row.iterations
            );
        }
        results.push(row);
    }
    let best = results
        .iter()
        .max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s))
        .map(|r| Best {
            batch_size: r.batch_size,
            items_per_s: r.items_per_s,
        });
    let report = Report {
        model: model.manifest().name.clone(),
        version: model.manifest().version.clone(),
        device: model.device().to_string(),
        half: model.is_half(),
        threads: args.threads,
        seq_len: text.then_some(args.seq_len),
        results,
        best,
    };
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else if let Some(best) = &report.best {
        println!(
            "{} on {} ({} threads): best {:.1} items/s at batch {}",
            report.model, report.device, report.threads, best.items_per_s, best.batch_size
        );
    }
    Ok(())
}
