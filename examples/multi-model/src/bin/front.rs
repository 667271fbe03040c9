//! Run with `cargo run -p example-multi-model --bin multi-model-front --
//! --config front.toml` (deployments with `[deployment.remote]`: their
//! versions' nodes from static lists, etcd or Kubernetes, weights, a
//! rollout, autoscaling), or for one version without a file `--addr
//! 127.0.0.1:8080 --node a=10.0.0.1:8000 --node b=10.0.0.2:8000` (or
//! `--etcd http://127.0.0.1:2379` for nodes registered there). KServe v2
//! gRPC is forwarded too with `--grpc-addr` or the configuration's
//! `server.grpc_addr`.
//!
//! A front: balances every request over remote multi-model nodes, loading
//! no model. Prints `listening on http://ADDR` once it listens; stops on
//! SIGTERM or Ctrl-C after finishing the requests it admitted.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use example_multi_model::remote::{Front, FrontOptions, Nodes, Scalers};
use example_multi_model::Config;
use tower::BoxError;

/// The front.
#[derive(Debug, Parser)]
struct Args {
    /// The server's TOML configuration, every deployment with a
    /// `[deployment.remote]` section (instead of `--node`/`--etcd`).
    #[arg(long, conflicts_with_all = ["nodes", "etcd", "grpc_nodes"])]
    config: Option<PathBuf>,
    /// HTTP address (default: the configuration's `server.addr`, else
    /// 127.0.0.1:8080).
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// A node, as `ID=HOST:PORT` (repeatable): a static list.
    #[arg(long = "node", value_parser = parse_node)]
    nodes: Vec<(String, SocketAddr)>,
    /// etcd client URL: follow the nodes registered there instead.
    #[arg(long, conflicts_with = "nodes")]
    etcd: Option<String>,
    /// Key prefix of the nodes in etcd.
    #[arg(long, default_value = "/convoy/endpoints/")]
    etcd_prefix: String,
    /// The model version to balance over.
    #[arg(long, default_value = "1")]
    version: String,
    /// gRPC address: forward KServe v2 gRPC calls too (with `--config`,
    /// overrides `server.grpc_addr`).
    #[arg(long)]
    grpc_addr: Option<SocketAddr>,
    /// A node's gRPC service, as `ID=HOST:PORT` (repeatable; with `--etcd`
    /// the nodes' registered gRPC addresses are used).
    #[arg(long = "grpc-node", value_parser = parse_node)]
    grpc_nodes: Vec<(String, SocketAddr)>,
    /// Bound on one forwarded request in milliseconds (504 beyond).
    #[arg(long, default_value_t = 30_000)]
    request_timeout_ms: u64,
}

fn parse_node(s: &str) -> Result<(String, SocketAddr), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?}: expected ID=HOST:PORT"))?;
    let addr = addr.parse().map_err(|e| format!("{s:?}: address: {e}"))?;
    Ok((id.to_string(), addr))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    example_multi_model::remote::log_to_stderr();
    let mut args = Args::parse();
    let (front, addr, grpc_addr) = match args.config.take() {
        Some(path) => {
            let mut config = Config::load(&path)?;
            let addr = args.addr.unwrap_or(config.server.addr);
            if let Some(grpc_addr) = args.grpc_addr {
                config.server.grpc_addr = Some(grpc_addr);
            }
            let grpc_addr = config.server.grpc_addr;
            let front = Front::from_config(&config, Scalers::new()).await?;
            (front, addr, grpc_addr)
        }
        None => {
            let addr = args
                .addr
                .unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 8080)));
            let grpc_addr = args.grpc_addr;
            (from_flags(args)?, addr, grpc_addr)
        }
    };
    serve(front, addr, grpc_addr).await
}

/// The one-version front of the command line's flags.
fn from_flags(args: Args) -> Result<Front, BoxError> {
    let (nodes, grpc_nodes) = match args.etcd {
        Some(url) => {
            let nodes = Nodes::Etcd {
                url,
                prefix: args.etcd_prefix,
            };
            (nodes.clone(), nodes)
        }
        None if args.nodes.is_empty() => return Err("name nodes with --node or --etcd".into()),
        None => (Nodes::Static(args.nodes), Nodes::Static(args.grpc_nodes)),
    };
    let mut options = FrontOptions::new(nodes, args.version);
    if args.grpc_addr.is_some() {
        options.grpc_nodes = Some(grpc_nodes);
    }
    options.request_timeout = std::time::Duration::from_millis(args.request_timeout_ms);
    Front::new(options)
}

async fn serve(
    front: Front,
    addr: SocketAddr,
    grpc_addr: Option<SocketAddr>,
) -> Result<(), BoxError> {
    #[cfg(unix)]
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let until_stopped = move || {
        let mut stopped = stopped.clone();
        async move {
            let _ = stopped.wait_for(|s| *s).await;
        }
    };
    let grpc = match (grpc_addr, front.grpc_router()) {
        (Some(addr), Some(router)) => {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            println!("grpc listening on {}", listener.local_addr()?);
            let shutdown = until_stopped();
            Some(tokio::spawn(async move {
                axum::serve(listener, router)
                    .with_graceful_shutdown(shutdown)
                    .await
            }))
        }
        _ => None,
    };
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        #[cfg(unix)]
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        let _ = stop.send(true);
    });
    axum::serve(listener, front.clone().router())
        .with_graceful_shutdown(until_stopped())
        .await?;
    front.shutdown();
    if let Some(grpc) = grpc {
        grpc.await??;
    }
    Ok(())
}
