//! The hardware plan: how many forward passes the server runs at once, and
//! how many replicas each deployment may scale to so that none runs past
//! the hardware.
//!
//! On the CPU every TorchScript model of the process runs on one
//! [`Executor`]: `server.cores / intra_op_threads` compute threads (at least
//! one), so libtorch's threads never outnumber the cores given, however many
//! models are loaded. A deployment's replicas share their version's model,
//! so replicas beyond the executor's threads cannot run at once: they only
//! split the batches (smaller batches, the same compute). Its autoscaler's
//! maximum is clipped to the threads, with a log line saying why, and
//! `/v1/models` shows the effective maximum (and the configured one beside
//! it). On a GPU, a version's batches run under its tenant's compute share:
//! replicas are clipped to the compute slots its fraction admits.

use std::num::NonZeroUsize;

use example_models::Executor;
use tower::BoxError;

use crate::config::{Config, DeploymentConfig};

/// The compute threads and the cores they were sized to.
#[derive(Debug, Clone)]
pub struct Compute {
    cores: usize,
    compute_slots: u32,
    executor: Option<Executor>,
}

impl Compute {
    /// The plan for `config`: the cores (`server.cores`, else the machine's)
    /// and, when a TorchScript deployment runs on the CPU, the executor.
    /// `on_gpu` says where each deployment runs.
    pub fn new(
        config: &Config,
        on_gpu: impl Fn(&DeploymentConfig) -> bool,
    ) -> Result<Compute, BoxError> {
        let cores = config
            .server
            .cores
            .map_or_else(machine_cores, NonZeroUsize::get);
        let cpu: Vec<&DeploymentConfig> = config
            .deployments()
            .filter(|d| !d.is_identity() && !on_gpu(d))
            .collect();
        let intra = cpu.iter().map(|d| d.device.intra_op_threads).max();
        let executor = match intra {
            None => None,
            Some(wanted) => {
                let intra = wanted.min(cores);
                if intra < wanted {
                    tracing::warn!(
                        cores,
                        "device.intra_op_threads = {wanted} is above the {cores} cores the \
                         server is given: each forward pass runs {intra} intra-op threads"
                    );
                }
                let executor = Executor::for_cores(cores, intra)?;
                tracing::info!(
                    cores,
                    threads = executor.threads(),
                    intra_op_threads = executor.intra_op_threads(),
                    "CPU compute: {} forward pass(es) at a time, {} intra-op threads each, \
                     shared by {} deployment(s)",
                    executor.threads(),
                    executor.intra_op_threads(),
                    cpu.len()
                );
                Some(executor)
            }
        };
        Ok(Compute {
            cores,
            compute_slots: config.server.compute_slots,
            executor,
        })
    }

    /// The cores the server is given.
    pub fn cores(&self) -> usize {
        self.cores
    }

    /// The CPU models' executor (`None` when no TorchScript model runs on
    /// the CPU).
    pub fn executor(&self) -> Option<&Executor> {
        self.executor.as_ref()
    }

    /// Forward passes a version of `d` can run at once: the executor's
    /// threads on the CPU, the compute slots of its fraction on a GPU;
    /// `None` for the identity model, which computes nothing.
    pub fn parallelism(&self, d: &DeploymentConfig, on_gpu: bool) -> Option<u32> {
        if d.is_identity() {
            return None;
        }
        if on_gpu {
            // Slots of the pool's compute gate this tenant's share covers.
            let slots = (d.device.fraction * f64::from(self.compute_slots)).floor();
            return Some((slots as u32).max(1));
        }
        let threads = self.executor.as_ref().map_or(1, Executor::threads);
        Some(u32::try_from(threads).unwrap_or(u32::MAX))
    }

    /// `d` with its replica bounds clipped to [`Compute::parallelism`]
    /// (`replicas.configured_max` keeps what the file said), logging why.
    pub fn clip(&self, d: &DeploymentConfig, on_gpu: bool) -> DeploymentConfig {
        let mut d = d.clone();
        let Some(limit) = self.parallelism(&d, on_gpu) else {
            return d;
        };
        if d.replicas.max > limit {
            let why = if on_gpu {
                format!(
                    "its GPU fraction {} admits {limit} of the pool's {} compute slots",
                    d.device.fraction, self.compute_slots
                )
            } else {
                format!(
                    "the {} cores run {limit} forward pass(es) of {} intra-op threads at a \
                     time; more replicas would split its batches without adding compute",
                    self.cores,
                    self.executor.as_ref().map_or(1, Executor::intra_op_threads)
                )
            };
            tracing::warn!(
                deployment = %d.name,
                "replicas.max {} clipped to {limit}: {why}",
                d.replicas.max
            );
            d.replicas.configured_max = Some(d.replicas.max);
            d.replicas.max = limit;
            d.replicas.min = d.replicas.min.min(limit);
        }
        d
    }
}

fn machine_cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}
