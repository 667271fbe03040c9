//! The multi-model server: TOML-configured deployments (the built-in
//! `identity` model, and TorchScript ResNet-50 / MiniLM / YOLOv8n models
//! through `example-models`), each request through all four convoy crates
//! (see [`deploy`]), served over axum with health, readiness, `/v1/models`
//! and Prometheus `/metrics`.
//!
//! ```no_run
//! # async fn run() -> Result<(), tower::BoxError> {
//! use example_multi_model::{Config, Server};
//!
//! let config = Config::load("examples/multi-model/config/test.toml".as_ref())?;
//! let server = Server::start(config).await?;
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! server.serve(listener, std::future::pending()).await?;
//! # Ok(()) }
//! ```

pub mod compute;
pub mod config;
pub mod deploy;
pub mod drift;
pub mod error;
pub mod http;
pub mod model;
pub mod registry;
pub mod remote;
pub mod rollout;
mod server;
pub mod v2;

pub use crate::config::Config;
pub use crate::server::Server;
