//! Run with `cargo run --release -p example-batch-tonic -- --addr 127.0.0.1:50051`.
//!
//! Serves `convoy.examples.Mlp/Infer` over gRPC through convoy-batcher; see
//! the library docs.

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Parser;
use convoy_batcher::BatchConfig;
use example_batch_tonic::MlpService;
use example_mlp::Mlp;
use tonic::transport::server::TcpIncoming;

#[derive(Debug, Parser)]
#[command(about = "The example MLP over gRPC, through convoy-batcher")]
struct Args {
    /// Address to listen on (port 0 picks a free port; the chosen address is printed).
    #[arg(long, default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    /// Most items in one forward pass.
    #[arg(long, default_value_t = 32)]
    max_batch_size: usize,
    /// Seed of the model's weights.
    #[arg(long, default_value_t = 42)]
    seed: u64,
}

async fn serve(args: Args) -> Result<(), tower::BoxError> {
    let model = Arc::new(Mlp::default_model(args.seed));
    let config = BatchConfig::builder()
        .name("mlp-grpc")
        .max_batch_size(args.max_batch_size)
        .build()?;
    let svc = MlpService::new(model, config);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    tonic::transport::Server::builder()
        .add_service(svc.clone().into_server())
        // No Nagle delay: a lone small answer would otherwise wait for the
        // client's delayed ACK (~40 ms).
        .serve_with_incoming_shutdown(
            TcpIncoming::from(listener).with_nodelay(Some(true)),
            async {
                let _ = tokio::signal::ctrl_c().await;
            },
        )
        .await?;
    svc.handle().close();
    Ok(())
}

#[tokio::main]
async fn main() -> ExitCode {
    match serve(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("batch-tonic: {e}");
            ExitCode::FAILURE
        }
    }
}
