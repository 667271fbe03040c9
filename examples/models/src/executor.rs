//! The threads that run forward passes on the CPU, shared by every model of
//! a process.
//!
//! libtorch parallelises each operator with OpenMP (GNU libgomp in the
//! PyTorch wheels), and every thread that runs a forward pass becomes the
//! master of its own OpenMP team. libgomp counts the threads of all teams in
//! the process; once there are more than the CPUs it may use, each worker
//! stops spinning between parallel regions (its spin count drops from ~3 ms
//! to 100 iterations) and sleeps on a futex instead. A transformer forward
//! pass is hundreds of short parallel regions, so every region then pays a
//! wake-up: measured with `raw-bench --neighbour` (one idle neighbour model
//! loaded, each model on its own thread), MiniLM's batch-1 pass went from
//! 663 to 36,110 context switches over 3 s and its latency up by a quarter.
//!
//! An [`Executor`] owns a fixed set of compute threads, sized by the server
//! to the cores it is given (threads × intra-op threads ≤ cores); models
//! loaded onto it hand it their batches instead of owning a thread each, so
//! the process's OpenMP teams never outnumber the cores, however many models
//! it serves.

use std::fmt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::Arc;
use std::thread;

use parking_lot::Mutex;

use crate::error::{ModelError, ModelErrorKind};

type Task = Box<dyn FnOnce() + Send + 'static>;

/// A fixed set of compute threads running forward passes, each with
/// libtorch's intra-op parallelism set to the same number of threads. Cheap
/// to clone; the threads end when the last clone (and the last model loaded
/// on it) is dropped.
#[derive(Clone)]
pub struct Executor {
    inner: Arc<Inner>,
}

struct Inner {
    tasks: Sender<Task>,
    threads: usize,
    intra_op_threads: usize,
}

impl fmt::Debug for Executor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Executor")
            .field("threads", &self.inner.threads)
            .field("intra_op_threads", &self.inner.intra_op_threads)
            .finish()
    }
}

impl PartialEq for Executor {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl Eq for Executor {}

impl Executor {
    /// Starts `threads` compute threads, each running libtorch with
    /// `intra_op_threads` intra-op threads. Both must be positive.
    pub fn new(threads: usize, intra_op_threads: usize) -> Result<Executor, ModelError> {
        if threads == 0 || intra_op_threads == 0 {
            return Err(ModelError::new(
                ModelErrorKind::Options,
                format!(
                    "an executor needs at least one thread and one intra-op thread \
                     (got {threads} and {intra_op_threads})"
                ),
            ));
        }
        let (tasks, rx) = mpsc::channel::<Task>();
        let rx = Arc::new(Mutex::new(rx));
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            thread::Builder::new()
                .name(format!("convoy-compute-{i}"))
                .spawn(move || run(&rx, intra_op_threads))
                .map_err(|e| {
                    ModelError::new(
                        ModelErrorKind::Load,
                        format!("spawning a compute thread: {e}"),
                    )
                })?;
        }
        Ok(Executor {
            inner: Arc::new(Inner {
                tasks,
                threads,
                intra_op_threads,
            }),
        })
    }

    /// Compute threads for a machine section of `cores` cores when each
    /// forward pass uses `intra_op_threads`: as many as fit side by side
    /// (at least one), so that threads × intra-op threads never exceeds
    /// `cores` when `intra_op_threads <= cores`.
    pub fn for_cores(cores: usize, intra_op_threads: usize) -> Result<Executor, ModelError> {
        let intra = intra_op_threads.max(1);
        Executor::new((cores / intra).max(1), intra)
    }

    /// The compute threads: how many forward passes run at once.
    pub fn threads(&self) -> usize {
        self.inner.threads
    }

    /// libtorch's intra-op threads of each compute thread.
    pub fn intra_op_threads(&self) -> usize {
        self.inner.intra_op_threads
    }

    /// Runs `task` on the next free compute thread. Fails only when the
    /// threads are gone (they never end while an `Executor` exists, unless
    /// spawning them failed).
    pub(crate) fn spawn(&self, task: impl FnOnce() + Send + 'static) -> Result<(), ModelError> {
        self.inner.tasks.send(Box::new(task)).map_err(|_| {
            ModelError::new(ModelErrorKind::Closed, "the compute threads have stopped")
        })
    }
}

/// A compute thread: libtorch's per-thread settings once, then tasks until
/// every sender is gone.
fn run(tasks: &Mutex<Receiver<Task>>, intra_op_threads: usize) {
    tch::set_num_threads(i32::try_from(intra_op_threads).unwrap_or(i32::MAX));
    // Grad mode is per thread: inference only, for every task.
    let _no_grad = tch::no_grad_guard();
    // The exported modules are frozen (already optimised). The JIT's
    // profiling executor would otherwise re-profile and re-specialise the
    // graph for every new input shape (each batch size, each sequence
    // length), making the first passes at each shape many times slower.
    let _ = tch::jit::f_set_graph_executor_optimize(false);
    loop {
        // The lock is held only while waiting: the next task goes to
        // whichever thread is free.
        let task = tasks.lock().recv();
        let Ok(task) = task else { return };
        // A panicking task drops its reply channel (its caller sees the
        // model closed); the thread keeps serving the others.
        let _ = panic::catch_unwind(AssertUnwindSafe(task));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_to_the_cores() {
        let e = Executor::for_cores(8, 2).unwrap();
        assert_eq!((e.threads(), e.intra_op_threads()), (4, 2));
        let e = Executor::for_cores(2, 2).unwrap();
        assert_eq!((e.threads(), e.intra_op_threads()), (1, 2));
        // More intra-op threads than cores still gets one thread.
        let e = Executor::for_cores(1, 2).unwrap();
        assert_eq!((e.threads(), e.intra_op_threads()), (1, 2));
        assert!(Executor::new(0, 1).is_err());
        assert!(Executor::new(1, 0).is_err());
    }

    #[test]
    fn runs_tasks_and_survives_a_panic() {
        let e = Executor::new(2, 1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        e.spawn(|| panic!("a task's panic stays in its task"))
            .unwrap();
        for i in 0..16 {
            let tx = tx.clone();
            e.spawn(move || tx.send(i).unwrap()).unwrap();
        }
        drop(tx);
        let mut got: Vec<i32> = rx.iter().collect();
        got.sort_unstable();
        assert_eq!(got, (0..16).collect::<Vec<_>>());
    }
}
