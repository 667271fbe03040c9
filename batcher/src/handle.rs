//! Live control of a running batcher.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{check_batch_size, check_preferred, check_queue_capacity};
use crate::error::ConfigError;
use crate::shared::{nanos, ControlRef};
use crate::stats::{snapshot, BatchStats};

/// Changes a running batcher's settings, closes it, and reads its
/// statistics. Cheap to clone; does not keep the batcher alive.
#[derive(Debug, Clone)]
pub struct BatchHandle {
    shared: Arc<dyn ControlRef>,
}

impl BatchHandle {
    pub(crate) fn new(shared: Arc<dyn ControlRef>) -> Self {
        Self { shared }
    }

    /// Changes the most items in one batch; applies to the next batch
    /// formed. Fails if `n` is zero or below a preferred batch size.
    pub fn set_max_batch_size(&self, n: usize) -> Result<(), ConfigError> {
        check_batch_size(n)?;
        let control = self.shared.control();
        let _guard = control.settings_lock.lock();
        check_preferred(&control.preferred.lock(), n)?;
        control.max_batch_size.store(n, Ordering::Relaxed);
        self.changed();
        Ok(())
    }

    /// Changes how long the oldest queued item may wait for a fuller batch.
    pub fn set_max_wait(&self, wait: Duration) {
        let control = self.shared.control();
        let _guard = control.settings_lock.lock();
        control.max_wait_nanos.store(nanos(wait), Ordering::Relaxed);
        self.changed();
    }

    /// Changes the queue capacity. Growing takes effect at once; shrinking
    /// below the number of queued items refuses new items until the queue
    /// has drained below the new capacity (nothing queued is dropped).
    pub fn set_queue_capacity(&self, n: usize) -> Result<(), ConfigError> {
        check_queue_capacity(n)?;
        let control = self.shared.control();
        let _guard = control.settings_lock.lock();
        let old = control.queue_capacity.swap(n, Ordering::AcqRel);
        if n > old {
            control.release_permits(n - old);
        } else if n < old {
            let shrink = old - n;
            let removed = control.semaphore.forget_permits(shrink);
            control
                .permit_debt
                .fetch_add(shrink - removed, Ordering::AcqRel);
        }
        self.changed();
        Ok(())
    }

    /// Stops admission: waiting and new callers get
    /// [`Closed`](crate::Closed); everything already queued is still
    /// dispatched, then the worker ends.
    pub fn close(&self) {
        self.shared.control().close();
    }

    /// Whether [`close`](Self::close) was called or the worker ended.
    pub fn is_closed(&self) -> bool {
        self.shared.control().closing.load(Ordering::Acquire)
    }

    /// A snapshot of the batcher's load; cheap enough to poll every few
    /// milliseconds.
    pub fn stats(&self) -> BatchStats {
        let control = self.shared.control();
        snapshot(
            &control.stats,
            &control.name,
            self.shared.queued(),
            control.queue_capacity.load(Ordering::Relaxed),
            control.max_batch_size.load(Ordering::Relaxed),
            control.batch_size_cap(),
            control.size_limit(),
        )
    }

    /// The largest batch the batcher forms now: the adaptive cap when
    /// [`adaptive_batch_size`](crate::BatchConfigBuilder::adaptive_batch_size)
    /// is on (it moves with the measured throughput), otherwise
    /// `max_batch_size`; never above the learned size limit
    /// ([`BatchLayer::size_limit`](crate::BatchLayer::size_limit)).
    pub fn batch_size_cap(&self) -> usize {
        self.shared.control().batch_size_cap()
    }

    fn changed(&self) {
        let control = self.shared.control();
        control.settings_changed.store(true, Ordering::Release);
        control.worker.wake();
    }
}
