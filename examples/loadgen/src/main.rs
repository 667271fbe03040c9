//! `loadgen run --url http://127.0.0.1:3000/v1/models/mlp/infer --concurrency 16`
//! (closed loop), `--rate 200` (open loop, Poisson), `--body-dir images/`
//! (bodies from files), `--v2 json|binary|grpc --model identity --input
//! INPUT0:FP32:1,16` (KServe v2); `loadgen sweep --rates 10,20,40 --plot
//! sweep.svg`; `loadgen demo` for the batched-vs-unbatched table.
//!
//! A load generator for loopback servers; see the library docs.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::{Args as ClapArgs, Parser, Subcommand};
use loadgen::demo::{headline, render_table, run_demo, DemoConfig, Stats};
use loadgen::grpc::{infer_request as grpc_request, GrpcTarget};
use loadgen::payload::{list_dir, read_file, Payload, Payloads};
use loadgen::plot::sweep_plot;
use loadgen::sweep::{parse_rates, sweep};
use loadgen::v2::{self, Encoding, InputSpec};
use loadgen::{
    http_client, random_inputs_body, run_target, HttpTarget, LoadConfig, LoadError, Target,
};

#[derive(Debug, Parser)]
#[command(
    about = "Closed- and open-loop load generator for loopback servers: HTTP, KServe v2 REST and gRPC"
)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

/// What to send, and where.
#[derive(Debug, ClapArgs)]
struct TargetArgs {
    /// The route (e.g. http://127.0.0.1:3000/v1/models/mlp/infer); with
    /// --v2, the server's base (REST) or gRPC endpoint (http://127.0.0.1:PORT).
    #[arg(long)]
    url: String,
    #[command(flatten)]
    bodies: BodyArgs,
    /// KServe v2 inference: json, binary (Triton's binary tensors) or grpc.
    #[arg(long)]
    v2: Option<Encoding>,
    /// With --v2: the model.
    #[arg(long, default_value = "identity")]
    model: String,
    /// With --v2: the model version.
    #[arg(long)]
    model_version: Option<String>,
    /// With --v2: an input NAME:DATATYPE:SHAPE, seeded random data (repeat).
    #[arg(long, default_value = "INPUT0:FP32:1,16")]
    input: Vec<InputSpec>,
    /// With --v2: BYTES inputs take their elements from these files, one
    /// request per file.
    #[arg(long)]
    bytes_dir: Option<PathBuf>,
}

/// Request bodies of plain HTTP targets.
#[derive(Debug, ClapArgs)]
struct BodyArgs {
    /// POST `{"inputs":[...]}` with this many seeded random numbers (0: plain GET).
    #[arg(long, default_value_t = 1024)]
    input_width: usize,
    /// POST this file (repeat for several, used in turn).
    #[arg(long)]
    body_file: Vec<PathBuf>,
    /// POST each file of this directory in turn (images, texts...).
    #[arg(long)]
    body_dir: Option<PathBuf>,
    /// POST each line of this text file in turn as a JSON list of one text.
    #[arg(long)]
    text_lines: Option<PathBuf>,
    /// With --text-lines: wrap the list as `{"<key>": [...]}`.
    #[arg(long)]
    text_key: Option<String>,
}

/// How hard and how long.
#[derive(Debug, ClapArgs)]
struct LoadArgs {
    /// Closed-loop clients (ignored with --rate).
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// Open loop: Poisson arrivals at this rate per second; latency from
    /// the intended send time.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: most requests in flight; arrivals beyond are dropped
    /// (counted as errors).
    #[arg(long, default_value_t = 1024)]
    max_outstanding: usize,
    /// Open loop: seed of the arrival schedule.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Seconds to send.
    #[arg(long, default_value_t = 5.0)]
    duration_secs: f64,
    /// Most requests to send in all.
    #[arg(long)]
    requests: Option<u64>,
    /// Seconds one request may take before it counts as a timeout.
    #[arg(long, default_value_t = 30.0)]
    timeout_secs: f64,
    /// No progress bar.
    #[arg(long)]
    no_progress: bool,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run against one target.
    Run {
        #[command(flatten)]
        target: TargetArgs,
        #[command(flatten)]
        load: LoadArgs,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Open loops at several rates: throughput and p50/p99 against offered load.
    Sweep {
        #[command(flatten)]
        target: TargetArgs,
        /// Offered rates per second, comma separated.
        #[arg(long)]
        rates: String,
        /// Seconds per rate.
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
        /// Unmeasured seconds at each rate first.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Most requests in flight; arrivals beyond are dropped.
        #[arg(long, default_value_t = 1024)]
        max_outstanding: usize,
        /// Seed of the arrival schedules.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Seconds one request may take before it counts as a timeout.
        #[arg(long, default_value_t = 30.0)]
        timeout_secs: f64,
        /// Write the plot here (SVG; the path ends in `.svg`).
        #[arg(long)]
        plot: Option<PathBuf>,
        /// The plot's title.
        #[arg(long, default_value = "sweep")]
        title: String,
        /// Print the points as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Batched vs unbatched route at several client counts, with the mean
    /// batch size the server reports.
    Demo {
        /// Server base, e.g. http://127.0.0.1:3000
        #[arg(long)]
        base: String,
        /// The batched route.
        #[arg(long, default_value = "/v1/models/mlp/infer")]
        batched: String,
        /// The unbatched route.
        #[arg(long, default_value = "/v1/models/mlp-unbatched/infer")]
        unbatched: String,
        /// Read batch statistics of this deployment from `GET /v1/models`
        /// (default: batch-axum's `/stats`).
        #[arg(long)]
        stats_deployment: Option<String>,
        #[command(flatten)]
        bodies: BodyArgs,
        /// Client counts, comma separated.
        #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
        concurrency: Vec<usize>,
        /// Measured seconds per run.
        #[arg(long, default_value_t = 4.0)]
        duration_secs: f64,
        /// Unmeasured warm-up seconds before each run.
        #[arg(long, default_value_t = 1.0)]
        warmup_secs: f64,
        /// Print the rows as JSON after the table.
        #[arg(long)]
        json: bool,
        /// The server's process id (same machine): report the CPU per
        /// request of each batched run, split into the server's forward
        /// passes, the rest of the server, and this load generator.
        #[arg(long)]
        server_pid: Option<u32>,
    },
}

fn secs(s: f64) -> Result<Duration, LoadError> {
    Duration::try_from_secs_f64(s).map_err(|e| LoadError::new(format!("bad duration {s}: {e}")))
}

fn text_payloads(path: &std::path::Path, key: Option<&str>) -> Result<Payloads, LoadError> {
    let text = read_file(path)?;
    let text = std::str::from_utf8(&text)
        .map_err(|e| LoadError::new(format!("{}: {e}", path.display())))?;
    Payloads::json_texts(text, key)
}

/// The bodies of a plain HTTP target.
fn http_payloads(t: &BodyArgs) -> Result<Option<Payloads>, LoadError> {
    if let Some(dir) = &t.body_dir {
        return Payloads::from_dir(dir).map(Some);
    }
    if !t.body_file.is_empty() {
        return Payloads::from_files(&t.body_file).map(Some);
    }
    if let Some(path) = &t.text_lines {
        return text_payloads(path, t.text_key.as_deref()).map(Some);
    }
    Ok((t.input_width > 0)
        .then(|| Payloads::single(Payload::json(random_inputs_body(t.input_width, 42)))))
}

/// Generated v2 inputs: one set per BYTES file, or eight seeded sets.
fn v2_inputs(t: &TargetArgs) -> Result<Vec<Vec<v2::InputData>>, LoadError> {
    let files: Vec<Bytes> = match &t.bytes_dir {
        Some(dir) => list_dir(dir)?
            .iter()
            .map(|p| read_file(p))
            .collect::<Result<_, _>>()?,
        None => Vec::new(),
    };
    let sets = if files.is_empty() { 8 } else { files.len() };
    Ok((0..sets)
        .map(|i| {
            let elements = files.get(i).map(std::slice::from_ref).unwrap_or_default();
            t.input
                .iter()
                .map(|spec| v2::generate(spec, i as u64 + 1, elements))
                .collect()
        })
        .collect())
}

/// The target and a base config (URI, bodies) for `t`.
async fn target(
    t: &TargetArgs,
    connections: usize,
    timeout: Duration,
) -> Result<(Arc<dyn Target>, LoadConfig), LoadError> {
    let uri = |s: String| s.parse().map_err(|e| LoadError::new(format!("{s}: {e}")));
    let base = t.url.trim_end_matches('/');
    match t.v2 {
        None => {
            let mut config = LoadConfig::new(uri(t.url.clone())?).request_timeout(timeout);
            if let Some(p) = http_payloads(&t.bodies)? {
                config = config.payloads(p);
            }
            let target = HttpTarget::new(http_client(connections), &config)?;
            Ok((Arc::new(target), config))
        }
        Some(Encoding::Grpc) => {
            let config = LoadConfig::new(uri(base.to_owned())?).request_timeout(timeout);
            let requests = v2_inputs(t)?
                .iter()
                .map(|set| grpc_request(&t.model, t.model_version.as_deref(), set))
                .collect();
            let target =
                GrpcTarget::connect(config.uri(), connections.clamp(1, 4), requests, timeout)
                    .await?;
            Ok((Arc::new(target), config))
        }
        Some(encoding) => {
            let path = v2::infer_path(&t.model, t.model_version.as_deref());
            let payloads = v2_inputs(t)?
                .iter()
                .map(|set| v2::rest_payload(set, encoding))
                .collect::<Result<Vec<_>, _>>()?;
            let config = LoadConfig::new(uri(format!("{base}{path}"))?)
                .request_timeout(timeout)
                .payloads(Payloads::many(payloads)?);
            let target = HttpTarget::new(http_client(connections), &config)?;
            Ok((Arc::new(target), config))
        }
    }
}

async fn main_inner(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        Command::Run {
            target: t,
            load,
            json,
        } => {
            let connections = load.rate.map_or(load.concurrency, |_| load.max_outstanding);
            let (target, mut config) = target(&t, connections, secs(load.timeout_secs)?).await?;
            config = config
                .duration(secs(load.duration_secs)?)
                .progress(!load.no_progress);
            config = match load.rate {
                Some(rate) => config
                    .open_loop(rate)
                    .max_outstanding(load.max_outstanding)
                    .seed(load.seed),
                None => config.concurrency(load.concurrency),
            };
            if let Some(n) = load.requests {
                config = config.max_requests(n);
            }
            let summary = run_target(target, &config).await?.summary();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
        }
        Command::Sweep {
            target: t,
            rates,
            duration_secs,
            warmup_secs,
            max_outstanding,
            seed,
            timeout_secs,
            plot,
            title,
            json,
        } => {
            let rates = parse_rates(&rates)?;
            let (target, config) = target(&t, max_outstanding, secs(timeout_secs)?).await?;
            let config = config
                .open_loop(rates[0])
                .max_outstanding(max_outstanding)
                .seed(seed)
                .duration(secs(duration_secs)?)
                .progress(true);
            let points = sweep(target, &config, &rates, secs(warmup_secs)?, |p| {
                eprintln!("{}", p.summary);
            })
            .await?;
            if let Some(path) = plot {
                sweep_plot(&path, &title, &points)?;
                eprintln!("wrote {}", path.display());
            }
            if json {
                println!("{}", serde_json::to_string(&points)?);
            }
        }
        Command::Demo {
            base,
            batched,
            unbatched,
            stats_deployment,
            bodies,
            concurrency,
            duration_secs,
            warmup_secs,
            json,
            server_pid,
        } => {
            let mut config = DemoConfig::new(base);
            config.server_pid = server_pid;
            config.concurrency = concurrency;
            config.duration = secs(duration_secs)?;
            config.warmup = secs(warmup_secs)?;
            config.batched_path = batched;
            config.unbatched_path = unbatched;
            if let Some(deployment) = stats_deployment {
                config.stats = Stats::V1Models { deployment };
            }
            config.payloads = http_payloads(&bodies)?;
            let rows = run_demo(&config).await?;
            println!();
            print!("{}", render_table(&rows));
            if let Some(line) = headline(&rows) {
                println!("\n{line}");
            }
            if json {
                println!("{}", serde_json::to_string(&rows)?);
            }
        }
    }
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match main_inner(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("loadgen: {e}");
            ExitCode::FAILURE
        }
    }
}
