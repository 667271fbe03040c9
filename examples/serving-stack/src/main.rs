//! Run with `cargo run --release -p example-serving-stack -- --addr 127.0.0.1:3000`,
//! then:
//!
//! ```text
//! curl -s localhost:3000/infer -H 'content-type: application/json' \
//!      -d '{"user": 7, "features": [1, 2, 3]}'
//! curl -s localhost:3000/infer -H 'x-convoy-version: v2' -H 'content-type: application/json' \
//!      -d '{"user": 7, "features": [1, 2, 3]}'
//! curl -s localhost:3000/stats
//! ```
//!
//! With `--rollout`, v2 goes from 1 % to 100 % of users in steps while its
//! error rate and p99 stay healthy; drive it with the load generator
//! (`loadgen --url http://127.0.0.1:3000/infer ...`) and watch `/stats`.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use example_serving_stack::{Stack, StackConfig};

#[derive(Debug, Parser)]
#[command(about = "A canary split over two autoscaled, balanced, batched model versions")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Start a rollout of v2 (1, 5, 10, 25, 50, 100 %).
    #[arg(long)]
    rollout: bool,
    /// Seconds per rollout step.
    #[arg(long, default_value_t = 30)]
    step_secs: u64,
    /// p99 latency target of each version's autoscaler, milliseconds.
    #[arg(long, default_value_t = 100)]
    slo_ms: u64,
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();
    let cfg = StackConfig {
        slo: Duration::from_millis(args.slo_ms),
        ..StackConfig::default()
    };
    let stack = match Stack::new(&cfg) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("serving-stack: {e}");
            return ExitCode::FAILURE;
        }
    };
    let _rollout = if args.rollout {
        let steps = vec![1.0, 5.0, 10.0, 25.0, 50.0, 100.0];
        match stack.rollout(steps, Duration::from_secs(args.step_secs)) {
            Ok(r) => Some(r),
            Err(e) => {
                eprintln!("serving-stack: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let listener = match tokio::net::TcpListener::bind(args.addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("serving-stack: cannot listen on {}: {e}", args.addr);
            return ExitCode::FAILURE;
        }
    };
    match listener.local_addr() {
        Ok(a) => println!("listening on http://{a}"),
        Err(e) => eprintln!("serving-stack: {e}"),
    }
    if let Err(e) = axum::serve(listener, stack.app()).await {
        eprintln!("serving-stack: {e}");
        return ExitCode::FAILURE;
    }
    stack.shutdown();
    ExitCode::SUCCESS
}
