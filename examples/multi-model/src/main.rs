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
    /// Node mode: register this server in etcd at this client URL (under a
    /// kept-alive lease) for fronts to find; on SIGTERM deregister first,
    /// then finish in-flight requests, then exit.
    #[arg(long)]
    etcd: Option<String>,
    /// Node mode: key prefix the fronts watch.
    #[arg(long, default_value = "/convoy/endpoints/")]
    etcd_prefix: String,
    /// Node mode: this node's id (default: the advertised address).
    #[arg(long)]
    node_id: Option<String>,
    /// Node mode: the address fronts reach this node at (default: the
    /// listening address).
    #[arg(long)]
    advertise: Option<SocketAddr>,
    /// Node mode: the address fronts reach the gRPC service at (default:
    /// its listening address).
    #[arg(long)]
    grpc_advertise: Option<SocketAddr>,
    /// Node mode: the model version this node serves.
    #[arg(long, default_value = "1")]
    node_version: String,
    /// Node mode: lease TTL in seconds (a killed node stays listed this long).
    #[arg(long, default_value_t = 3)]
    lease_ttl: u64,
    /// Node mode: milliseconds between deregistering and closing the
    /// listener, for the fronts to see the node go.
    #[arg(long, default_value_t = 500)]
    drain_grace_ms: u64,
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    example_multi_model::remote::log_to_stderr();
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
    let mut grpc_local = None;
    let grpc = match grpc_addr {
        Some(grpc_addr) => {
            let listener = tokio::net::TcpListener::bind(grpc_addr).await?;
            let local = listener.local_addr()?;
            grpc_local = Some(local);
            let server = server.clone();
            let shutdown = until_stopped();
            let task = tokio::spawn(async move { server.serve_grpc(listener, shutdown).await });
            println!("grpc listening on {local}");
            Some(task)
        }
        None => None,
    };
    let node = match &args.etcd {
        Some(etcd) => {
            let advertise = args.advertise.unwrap_or(local);
            let options = example_multi_model::remote::NodeOptions {
                etcd: etcd.clone(),
                prefix: args.etcd_prefix.clone(),
                id: args
                    .node_id
                    .clone()
                    .unwrap_or_else(|| advertise.to_string()),
                advertise,
                grpc_advertise: grpc_local.map(|local| args.grpc_advertise.unwrap_or(local)),
                version: args.node_version.clone(),
                ttl: std::time::Duration::from_secs(args.lease_ttl),
                drain_grace: std::time::Duration::from_millis(args.drain_grace_ms),
            };
            Some(example_multi_model::remote::Node::register(&options).await?)
        }
        None => None,
    };
    println!("listening on http://{local}");
    tokio::spawn(async move {
        signal.await;
        // A node leaves the fronts' lists before it stops accepting.
        if let Some(node) = node {
            node.drain().await;
        }
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
