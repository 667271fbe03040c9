//! Failure isolation: the parts of failed batches waiting to run again.
//!
//! When the batch service fails a whole batch, one bad item must not cost
//! every other caller its answer. The worker splits the failed batch in two
//! halves that run again (the next *pass*); a half that fails again is
//! split again, so an item that fails on its own ends up alone and only its
//! caller gets the error. Parts wait here, ahead of the queue, until the
//! batch service has room for them.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use tokio::time::Instant;

use crate::error::DeadlineExceeded;
use crate::queue::Removed;
use crate::shared::Sender;

/// What the worker keeps of a request in a running batch so that it can
/// send the request again if the batch fails.
pub(crate) struct Kept<Req> {
    pub(crate) req: Req,
    pub(crate) deadline: Option<Instant>,
}

/// One item of a failed batch waiting to run again.
pub(crate) struct Retry<Req, Resp> {
    pub(crate) req: Req,
    pub(crate) deadline: Option<Instant>,
    pub(crate) tx: Sender<Resp>,
}

impl<Req, Resp> Retry<Req, Resp> {
    /// Whether nobody waits for the answer any more: the caller went away
    /// (`Some(false)`) or its deadline passed (`Some(true)`).
    fn gone(&self, now: Instant) -> Option<bool> {
        if self.tx.is_closed() {
            Some(false)
        } else if self.deadline.is_some_and(|d| d <= now) {
            Some(true)
        } else {
            None
        }
    }
}

/// A part of a failed batch, to be run again in pass `pass`.
pub(crate) struct Part<Req, Resp> {
    pub(crate) items: Vec<Retry<Req, Resp>>,
    /// 1 for the halves of a batch that failed, 2 for their halves...
    pub(crate) pass: u32,
    /// The deepest pass started for the batch this part comes from.
    origin: Arc<AtomicU32>,
}

impl<Req, Resp> Part<Req, Resp> {
    /// The batch this part comes from, for the parts split from it.
    pub(crate) fn origin(&self) -> Arc<AtomicU32> {
        self.origin.clone()
    }

    /// Records that the part starts; true when it is the first part of its
    /// failed batch in its pass (a new extra pass over that batch).
    pub(crate) fn starts_pass(&self) -> bool {
        self.origin.fetch_max(self.pass, Ordering::Relaxed) < self.pass
    }

    /// Removes the items nobody waits for (answering expired ones with
    /// [`DeadlineExceeded`], as if they were still queued) and returns the
    /// earliest deadline left.
    fn prune(&mut self, now: Instant, removed: &mut Removed) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        if self.items.iter().all(|item| item.gone(now).is_none()) {
            for d in self.items.iter().filter_map(|item| item.deadline) {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
            return earliest;
        }
        let all = std::mem::take(&mut self.items);
        for item in all {
            match item.gone(now) {
                None => {
                    if let Some(d) = item.deadline {
                        earliest = Some(earliest.map_or(d, |e| e.min(d)));
                    }
                    self.items.push(item);
                }
                Some(false) => removed.cancelled += 1,
                Some(true) => {
                    removed.expired += 1;
                    let _ = item.tx.send(Err(DeadlineExceeded::new().into()));
                }
            }
        }
        earliest
    }
}

/// Parts of failed batches waiting to run again, oldest first.
pub(crate) struct Retries<Req, Resp> {
    parts: VecDeque<Part<Req, Resp>>,
    /// Items in all parts.
    items: usize,
}

impl<Req, Resp> Retries<Req, Resp> {
    pub(crate) fn new() -> Self {
        Self {
            parts: VecDeque::new(),
            items: 0,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.parts.is_empty()
    }

    /// Items waiting to run again.
    pub(crate) fn len(&self) -> usize {
        self.items
    }

    /// Splits the items of a failed batch (run in pass `pass - 1`) in two
    /// halves that run in pass `pass`. Returns the earliest deadline among
    /// them.
    pub(crate) fn split(
        &mut self,
        mut items: Vec<Retry<Req, Resp>>,
        pass: u32,
        origin: Option<Arc<AtomicU32>>,
    ) -> Option<Instant> {
        let earliest = items.iter().filter_map(|i| i.deadline).min();
        let origin = origin.unwrap_or_default();
        self.items += items.len();
        let second = items.split_off(items.len() / 2);
        for half in [items, second] {
            if !half.is_empty() {
                self.parts.push_back(Part {
                    items: half,
                    pass,
                    origin: origin.clone(),
                });
            }
        }
        earliest
    }

    /// The oldest part that still has live items, pruned at `now`.
    pub(crate) fn next(&mut self, now: Instant, removed: &mut Removed) -> Option<Part<Req, Resp>> {
        while let Some(mut part) = self.parts.pop_front() {
            let before = part.items.len();
            part.prune(now, removed);
            self.items -= before;
            if !part.items.is_empty() {
                return Some(part);
            }
        }
        None
    }

    /// Puts back a part that [`next`](Self::next) returned but that could
    /// not go out yet.
    pub(crate) fn put_back(&mut self, part: Part<Req, Resp>) {
        self.items += part.items.len();
        self.parts.push_front(part);
    }

    /// Removes the items nobody waits for from every part. Returns the
    /// earliest deadline left.
    pub(crate) fn sweep(&mut self, now: Instant, removed: &mut Removed) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        for part in &mut self.parts {
            let before = part.items.len();
            if let Some(d) = part.prune(now, removed) {
                earliest = Some(earliest.map_or(d, |e| e.min(d)));
            }
            self.items -= before - part.items.len();
        }
        self.parts.retain(|p| !p.items.is_empty());
        earliest
    }

    /// Every waiting item's caller, for shutdown.
    pub(crate) fn drain(&mut self) -> impl Iterator<Item = Sender<Resp>> + '_ {
        self.items = 0;
        self.parts
            .drain(..)
            .flat_map(|mut p| std::mem::take(&mut p.items))
            .map(|item| item.tx)
    }
}
