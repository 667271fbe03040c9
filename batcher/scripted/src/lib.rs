//! The batch service that convoy-batcher's property tests and its fuzz
//! harness drive: every batch it is called with is logged with a sender,
//! and the batch ends when the test sends how it ends — answered (items
//! whose id is `4 mod 5` fail alone with [`ItemError`]), answered with one
//! item too few or too many, failed as a whole, or panicking.
//!
//! ```
//! use convoy_batcher_scripted::{Ending, Log, Scripted};
//! use tower::{Service, ServiceExt};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let log = Log::default();
//! let mut model = Scripted::new(log.clone());
//! let answer = model.ready().await.unwrap().call(vec![1, 4]);
//! let (batch, _, reply) = log.lock().pop().unwrap();
//! assert_eq!(batch, [1, 4]);
//! reply.unwrap().send(Ending::Ok).unwrap();
//! let items = answer.await.unwrap();
//! assert_eq!(items[0].as_ref().ok(), Some(&1));
//! assert!(items[1].is_err());
//! # }
//! ```

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tower::{BoxError, Service};

/// The message of a scripted panic, for tests that silence it.
pub const PANIC_MESSAGE: &str = "convoy scripted batch panic";

/// How a scripted batch ends. (The order of the variants is what fuzz
/// inputs select by: checked-in seeds rely on it.)
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "arbitrary", derive(arbitrary::Arbitrary))]
pub enum Ending {
    /// One answer per item; items whose id is `4 mod 5` fail with [`ItemError`].
    Ok,
    /// The whole batch fails.
    Fail,
    /// The batch's future panics with [`PANIC_MESSAGE`].
    Panic,
    /// As `Ok`, one answer short.
    Short,
    /// As `Ok`, with one answer too many.
    Long,
}

impl Ending {
    /// The answers of `batch` for an answered ending (`Ok`, `Short`, `Long`).
    fn answer(self, batch: Vec<u32>) -> Vec<Result<u32, ItemError>> {
        let mut out: Vec<_> = batch
            .into_iter()
            .map(|id| if id % 5 == 4 { Err(ItemError) } else { Ok(id) })
            .collect();
        match self {
            Ending::Short => {
                out.pop();
            }
            Ending::Long => out.push(Ok(u32::MAX)),
            _ => {}
        }
        out
    }
}

/// The per-item error of an item whose id is `4 mod 5`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemError;

impl std::fmt::Display for ItemError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("item error")
    }
}

impl std::error::Error for ItemError {}

/// Every batch the service was called with, when, and the sender that ends
/// it (taken by the test when it ends the batch).
pub type Log = Arc<Mutex<Vec<(Vec<u32>, Instant, Option<oneshot::Sender<Ending>>)>>>;

/// A batch service whose batches end when and how the test says.
#[derive(Debug, Clone)]
pub struct Scripted {
    log: Log,
}

impl Scripted {
    /// A service logging its batches into `log`.
    pub fn new(log: Log) -> Self {
        Self { log }
    }
}

impl Service<Vec<u32>> for Scripted {
    type Response = Vec<Result<u32, ItemError>>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, batch: Vec<u32>) -> Self::Future {
        let (tx, rx) = oneshot::channel();
        self.log
            .lock()
            .push((batch.clone(), Instant::now(), Some(tx)));
        Box::pin(async move {
            match rx.await {
                Ok(Ending::Fail) => Err("scripted batch failure".into()),
                Ok(Ending::Panic) => panic!("{PANIC_MESSAGE}"),
                Ok(ending) => Ok(ending.answer(batch)),
                Err(_) => Err("the batch was dropped".into()),
            }
        })
    }
}
