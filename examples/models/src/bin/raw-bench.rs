//! Run with `cargo run --release -p example-models --bin raw-bench -- --model-dir models/resnet50/1`
//!
//! The model's raw offline throughput: forward passes in a loop in one
//! process, no server, at each batch size; items/s, the median batch latency
//! and the best batch size. `--json` prints one JSON object instead of a
//! table.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use example_models::text::TextEncoder;
use example_models::{synthetic_input, Device, Executor, LoadOptions, Model};
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
    /// Seconds of forward passes per batch size (per round).
    #[arg(long, default_value_t = 3.0)]
    seconds: f64,
    /// Rounds over all batch sizes, one size after the other in each: a
    /// size's items/s is the median over the rounds, so one slow or fast
    /// spell of a shared machine does not pick the best size.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
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
    /// Another model version directory to load (and warm up) in the same
    /// process before measuring, left idle: shows what a neighbour costs a
    /// model that shares the process with it. Repeatable.
    #[arg(long)]
    neighbour: Vec<PathBuf>,
    /// Each model on a compute thread of its own (each its own OpenMP
    /// team) instead of one executor sized to the cores for all of them, as
    /// the server runs them: with `--neighbour`, shows what the shared
    /// executor saves.
    #[arg(long)]
    own_threads: bool,
    /// A text model's inputs: these texts (one per line), tokenized by the
    /// model's tokenizer, one item per text, padded to the batch's longest
    /// as the server pads them — the load generator's `--text-lines` file,
    /// so raw and served throughput see the same sequences. Without it,
    /// `--seq-len` tokens per row.
    #[arg(long)]
    text_lines: Option<PathBuf>,
}

#[derive(Serialize, Debug)]
struct Row {
    batch_size: usize,
    iterations: usize,
    /// The median over the rounds.
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
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let executor = if args.own_threads {
        None
    } else {
        Some(Executor::for_cores(cores, args.threads)?)
    };
    let opts = LoadOptions {
        device,
        intra_op_threads: args.threads,
        max_batch_size: max,
        half: args.half,
        queue_capacity: 1,
        executor,
        profile: false,
    };
    let model = Model::load(&args.model_dir, &opts)?;
    // Idle neighbours: loaded and warmed up like the server loads every
    // deployment, then never called. Kept alive until the end.
    let _neighbours = args
        .neighbour
        .iter()
        .map(|dir| Model::load(dir, &opts))
        .collect::<Result<Vec<_>, _>>()?;
    let text = model
        .manifest()
        .inputs
        .iter()
        .any(|s| s.shape[1..].contains(&-1));
    let texts = match &args.text_lines {
        Some(path) if text => {
            let encoder = TextEncoder::from_manifest(&args.model_dir, model.manifest())?;
            let encoded = std::fs::read_to_string(path)?
                .lines()
                .filter(|l| !l.trim().is_empty())
                .map(|l| encoder.encode(l))
                .collect::<Result<Vec<_>, _>>()?;
            if encoded.is_empty() {
                return Err(format!("{}: no texts", path.display()).into());
            }
            Some(encoded)
        }
        _ => None,
    };
    // One batch of `b` rows: `b` items of one text each (cycling), or one
    // synthetic item of `b` rows.
    let batch_of = |b: usize| match &texts {
        Some(texts) => texts.iter().cycle().take(b).cloned().collect::<Vec<_>>(),
        None => vec![synthetic_input(model.manifest(), b, args.seq_len)],
    };
    if args.rounds == 0 {
        return Err("--rounds must be at least 1".into());
    }
    // Each size's batch, warmed up once; then the rounds, interleaved.
    let batches = args
        .batch_sizes
        .iter()
        .map(|&b| {
            let batch = batch_of(b);
            model.forward_blocking(batch.clone())?;
            Ok(batch)
        })
        .collect::<Result<Vec<_>, Box<dyn std::error::Error>>>()?;
    let mut passes: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    let mut rates: Vec<Vec<f64>> = vec![Vec::new(); batches.len()];
    for _ in 0..args.rounds {
        for (i, batch) in batches.iter().enumerate() {
            let lat = model.time_passes(batch, Duration::from_secs_f64(args.seconds))?;
            let elapsed: f64 = lat.iter().sum();
            rates[i].push((args.batch_sizes[i] * lat.len()) as f64 / elapsed);
            passes[i].extend(lat);
        }
    }
    let mut results = Vec::new();
    for ((&b, mut lat), mut rate) in args.batch_sizes.iter().zip(passes).zip(rates) {
        lat.sort_by(f64::total_cmp);
        rate.sort_by(f64::total_cmp);
        let row = Row {
            batch_size: b,
            iterations: lat.len(),
            items_per_s: rate[rate.len() / 2],
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
        seq_len: (text && texts.is_none()).then_some(args.seq_len),
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
