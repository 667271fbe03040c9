//! Run with `cargo run --release -p example-loadgen -- run --url http://127.0.0.1:3000/v1/models/mlp/infer --concurrency 16`
//! (or `-- demo --base http://127.0.0.1:3000` for the batched-vs-unbatched table).
//!
//! A closed-loop load generator for loopback servers; see the library docs.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use loadgen::demo::{headline, render_table, run_demo, DemoConfig};
use loadgen::{random_inputs_body, run, LoadConfig};

#[derive(Debug, Parser)]
#[command(about = "Closed-loop HTTP load generator (loopback only)")]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// One run against one URL.
    Run {
        /// Target, e.g. http://127.0.0.1:3000/v1/models/mlp/infer
        #[arg(long)]
        url: String,
        /// Closed-loop clients.
        #[arg(long, default_value_t = 16)]
        concurrency: usize,
        /// Seconds to run.
        #[arg(long, default_value_t = 5.0)]
        duration_secs: f64,
        /// Most requests to send in all.
        #[arg(long)]
        requests: Option<u64>,
        /// POST `{"inputs":[...]}` with this many seeded random numbers
        /// (0: plain GET).
        #[arg(long, default_value_t = 1024)]
        input_width: usize,
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
    },
    /// The batch-axum demo: batched vs unbatched route at several client counts.
    Demo {
        /// Server base, e.g. http://127.0.0.1:3000
        #[arg(long)]
        base: String,
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
    },
}

fn secs(s: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(s).map_err(|e| format!("bad duration {s}: {e}"))
}

async fn main_inner(args: Args) -> Result<(), Box<dyn std::error::Error>> {
    match args.command {
        Command::Run {
            url,
            concurrency,
            duration_secs,
            requests,
            input_width,
            json,
        } => {
            let mut config = LoadConfig::new(url.parse()?)
                .concurrency(concurrency)
                .duration(secs(duration_secs)?);
            if input_width > 0 {
                config = config.json_body(random_inputs_body(input_width, 42));
            }
            if let Some(n) = requests {
                config = config.max_requests(n);
            }
            let summary = run(&config).await?.summary();
            if json {
                println!("{}", serde_json::to_string(&summary)?);
            } else {
                println!("{summary}");
            }
        }
        Command::Demo {
            base,
            concurrency,
            duration_secs,
            warmup_secs,
            json,
        } => {
            let mut config = DemoConfig::new(base);
            config.concurrency = concurrency;
            config.duration = secs(duration_secs)?;
            config.warmup = secs(warmup_secs)?;
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
