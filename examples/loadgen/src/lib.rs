//! A load generator for the convoy examples: closed loop or open loop,
//! over HTTP (any route, bodies from files), KServe v2 REST (JSON or binary
//! tensors) and KServe v2 gRPC.
//!
//! - **Closed loop** ([`Mode::Closed`]): `concurrency` clients each send one
//!   request, wait for its answer, and send the next. It finds the
//!   throughput at saturation, but a slow server slows the clients down,
//!   so queueing never shows in full (coordinated omission).
//! - **Open loop** ([`Mode::Open`]): requests arrive on a seeded Poisson
//!   schedule ([`schedule::PoissonSchedule`]) at a target rate whatever the
//!   server does, and each latency is measured from the request's
//!   *intended* send time, so a stall shows in every request scheduled
//!   during it. At most `max_outstanding` requests are in flight; an
//!   arrival beyond that is not sent and counts as a `dropped` error.
//!
//! Runs stop by themselves (duration or request budget) and report items
//! per second, latency percentiles (hdrhistogram, microseconds), errors by
//! kind with their own latencies, and answers per second of the run;
//! [`sweep`] runs an open loop at several rates and [`plot`] draws
//! throughput and p50/p99 against offered load. [`run_target`] drives any
//! [`Target`]: a test's own client that checks each answer (the
//! multi-model server's overload test and soak do).
//!
//! It only talks to loopback addresses: it is a tool for measuring the
//! examples on this machine, not for loading someone else's server.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! use std::time::Duration;
//! use loadgen::{LoadConfig, run};
//!
//! let config = LoadConfig::new("http://127.0.0.1:3000/v1/models/mlp/infer".parse()?)
//!     .open_loop(200.0)
//!     .duration(Duration::from_secs(5))
//!     .json_body(r#"{"inputs":[0.0]}"#);
//! let report = run(&config).await?;
//! println!("{}", report.summary());
//! # Ok(()) }
//! ```

mod config;
pub mod cpu;
pub mod demo;
mod error;
pub mod grpc;
mod http;
pub mod payload;
pub mod plot;
mod progress;
mod report;
mod run;
pub mod schedule;
pub mod sweep;
pub mod v2;

pub use config::{LoadConfig, Mode};
pub use error::LoadError;
pub use http::{
    ensure_loopback, get_body, http_client, random_inputs_body, send_http, HttpClient, HttpTarget,
};
pub use report::{LoadReport, Summary, DROPPED};
pub use run::{run, run_target, run_with, BoxFuture, Target};
