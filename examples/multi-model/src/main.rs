//! Run with `cargo run -p example-multi-model --release -- --config
//! examples/multi-model/config/demo.toml`.
//!
//! Prints `listening on http://ADDR` on stdout once every model is loaded
//! and warmed; stops on SIGTERM or Ctrl-C after finishing admitted work.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use example_multi_model::{Config, Server};
use tower::BoxError;

/// The multi-model server.
#[derive(Debug, Parser)]
struct Args {
    /// The TOML configuration.
    #[arg(long)]
    config: PathBuf,
    /// HTTP address (overrides `server.addr`).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// gRPC address (overrides `server.grpc_addr`).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// Model packages directory (overrides `server.models_dir`).
    #[arg(long)]
    models_dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let mut config = Config::load(&args.config)?;
    if let Some(addr) = args.addr {
        config.server.addr = addr;
    }
    if let Some(addr) = args.grpc_addr {
        config.server.grpc_addr = Some(addr);
    }
    if let Some(dir) = args.models_dir {
        config.server.models_dir = dir;
    }
    let (addr, grpc_addr) = (config.server.addr, config.server.grpc_addr);
    // Listen for SIGTERM before anything announces the server: a supervisor
    // may send it the moment it reads "listening", and an unregistered
    // signal would kill the process instead of draining it.
    let signal = shutdown_signal()?;
    let server = Server::start(config).await?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let local = listener.local_addr()?;
    // Readiness: every version has a ready replica.
    while !server.ready() {
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    // One signal stops both servers.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let grpc = match grpc_addr {
        Some(grpc_addr) => {
            let listener = tokio::net::TcpListener::bind(grpc_addr).await?;
            let local = listener.local_addr()?;
            let server = server.clone();
            let shutdown = until_stopped();
            let task = tokio::spawn(async move { server.serve_grpc(listener, shutdown).await });
            println!("grpc listening on {local}");
            Some(task)
        }
        None => None,
    };
    println!("listening on http://{local}");
    tokio::spawn(async move {
        signal.await;
        let _ = stop.send(true);
    });
    server.serve(listener, until_stopped()).await?;
    if let Some(grpc) = grpc {
        grpc.await??;
    }
    tracing::info!("stopped");
    Ok(())
}

/// Registers the shutdown signals now and resolves when one arrives.
fn shutdown_signal() -> std::io::Result<impl std::future::Future<Output = ()>> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    Ok(async move {
        let ctrl_c = async {
            let _ = tokio::signal::ctrl_c().await;
        };
        #[cfg(unix)]
        let term = async move {
            term.recv().await;
        };
        #[cfg(not(unix))]
        let term = std::future::pending::<()>();
        tokio::select! {
            () = ctrl_c => {},
            () = term => {},
        }
        tracing::info!("shutting down: finishing admitted requests");
    })
}
