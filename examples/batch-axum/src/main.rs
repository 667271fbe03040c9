//! Run with `cargo run --release -p example-batch-axum -- --addr 127.0.0.1:3000`,
//! then `curl -s localhost:3000/stats` or drive it with `loadgen` (`make demo`).
//!
//! Serves the example MLP batched and unbatched; see the library docs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use example_batch_axum::{app, AppState, Mlp, ServerConfig};
use tokio::io::AsyncWriteExt;

#[derive(Debug, Parser)]
#[command(about = "An MLP served through convoy-batcher (and unbatched, for comparison)")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    addr: SocketAddr,
    /// Most items in one forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch_size: usize,
    /// Most queued requests per route; more get 503.
    #[arg(long, default_value_t = 1024)]
    queue_capacity: usize,
    /// Microseconds the oldest queued request may wait for a fuller batch.
    #[arg(long, default_value_t = 0)]
    max_wait_us: u64,
    /// Milliseconds a request may stay queued before it gets 504.
    #[arg(long, default_value_t = 5000)]
    queue_timeout_ms: u64,
    /// Seed of the model's weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

async fn serve(args: Args) -> Result<(), tower::BoxError> {
    let model = Arc::new(Mlp::default_model(args.seed));
    tracing::info!(?model, "model ready");
    let config = ServerConfig {
        max_batch_size: args.max_batch_size,
        queue_capacity: args.queue_capacity,
        max_wait: Duration::from_micros(args.max_wait_us),
        queue_timeout: Duration::from_millis(args.queue_timeout_ms),
    };
    let state = AppState::new(model, &config)?;
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    // The demo script reads this line to find the port.
    let line = format!("listening on http://{}\n", listener.local_addr()?);
    let mut stdout = tokio::io::stdout();
    stdout.write_all(line.as_bytes()).await?;
    stdout.flush().await?;
    axum::serve(listener, app(state.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    state.batched().handle().close();
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = term.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match serve(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batch-axum: {e}");
            ExitCode::FAILURE
        }
    }
}
