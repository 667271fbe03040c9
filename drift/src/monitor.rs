//! The monitor: a uniform sample of each window's rows, kept by a background
//! task, tested against the reference when the window closes.
//!
//! On the request path a [`DriftHandle`] costs one atomic `fetch_add` (and a
//! hash) per request; for a sampled request, the row is built and handed to
//! the background task with a `try_send` (dropped and counted when the queue
//! is full). The sample is Vitter's Algorithm R with the random draw taken
//! from a hash of the request's index in the window, so the decision needs
//! no lock and no shared random state: request `i` (0-based) is kept when
//! `i < k`, or else when `hash(i) mod (i + 1) < k`, replacing slot
//! `hash(i) mod (i + 1)`. The task keeps `k` slots (constant memory), each
//! holding the row of the highest index that chose it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use parking_lot::RwLock;
use tokio::sync::mpsc;

use crate::config::DriftSettings;
use crate::report::{compare, CompareOptions, DriftReport, WindowInfo};
use crate::stats::{ColumnKind, ColumnValues};
use crate::webhook::Webhook;

/// One feature value of a sampled row.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A number (numerical column).
    Num(f64),
    /// A label (categorical column).
    Cat(Arc<str>),
}

/// A sampled row: one value per reference column, in the reference's order.
pub type Row = Vec<Value>;

/// Queue length between the request path and the background task.
pub const QUEUE: usize = 1024;

const INDEX_BITS: u32 = 40;
const INDEX_MASK: u64 = (1 << INDEX_BITS) - 1;

/// A request chosen for the sample: where its row goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ticket {
    epoch: u64,
    index: u64,
    slot: usize,
}

struct Sample {
    ticket: Ticket,
    row: Row,
}

struct Shared {
    name: String,
    counter: AtomicU64,
    dropped: AtomicU64,
    sample_size: usize,
    seed: u64,
    tx: mpsc::Sender<Sample>,
    latest: RwLock<Option<Arc<DriftReport>>>,
    drifted: AtomicBool,
}

/// splitmix64: a fast, well-mixed hash of the request index.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Algorithm R's decision for index `i` of a window: the slot it takes, if any.
pub fn reservoir_slot(seed: u64, epoch: u64, index: u64, k: usize) -> Option<usize> {
    if index < k as u64 {
        return Some(index as usize);
    }
    let j = mix(seed ^ mix(epoch ^ (index << 1))) % (index + 1);
    (j < k as u64).then_some(j as usize)
}

/// The request path's side of a monitor: cheap to clone, `Send + Sync`.
#[derive(Clone)]
pub struct DriftHandle {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for DriftHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DriftHandle")
            .field("name", &self.shared.name)
            .field("sample_size", &self.shared.sample_size)
            .finish()
    }
}

impl DriftHandle {
    /// Counts a request and says whether its row is to be sampled.
    pub fn ticket(&self) -> Option<Ticket> {
        let v = self.shared.counter.fetch_add(1, Ordering::Relaxed);
        let (epoch, index) = (v >> INDEX_BITS, v & INDEX_MASK);
        reservoir_slot(self.shared.seed, epoch, index, self.shared.sample_size).map(|slot| Ticket {
            epoch,
            index,
            slot,
        })
    }

    /// Hands a sampled row to the background task; never waits (a full
    /// queue drops the row and counts it). A request that outlived the
    /// window it was counted in is counted again in the current one and
    /// goes there if that window's draw keeps it: slow requests are not lost
    /// to the window boundary.
    pub fn submit(&self, ticket: Ticket, row: Row) {
        let current = self.shared.counter.load(Ordering::Relaxed) >> INDEX_BITS;
        let ticket = if ticket.epoch == current {
            ticket
        } else {
            match self.ticket() {
                Some(t) => t,
                None => return,
            }
        };
        if self.shared.tx.try_send(Sample { ticket, row }).is_err() {
            self.shared.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Counts a request and, when it is sampled, builds its row with `row`
    /// and submits it.
    pub fn observe(&self, row: impl FnOnce() -> Row) {
        if let Some(t) = self.ticket() {
            self.submit(t, row());
        }
    }

    /// The last closed window's report, if a window has closed.
    pub fn latest(&self) -> Option<Arc<DriftReport>> {
        self.shared.latest.read().clone()
    }

    /// Whether the last tested window showed dataset drift.
    pub fn drifted(&self) -> bool {
        self.shared.drifted.load(Ordering::Relaxed)
    }

    /// The monitored model's name.
    pub fn name(&self) -> &str {
        &self.shared.name
    }
}

/// Starts monitors.
#[derive(Debug)]
pub struct Monitor;

impl Monitor {
    /// Starts the background task of a monitor named `name` (the `model`
    /// label of its gauges) on the current tokio runtime; it runs until every
    /// [`DriftHandle`] is dropped. `webhook`, when given, is called once per
    /// transition into dataset drift.
    pub fn start(name: impl Into<String>, settings: DriftSettings) -> DriftHandle {
        let webhook = settings.webhook.clone().map(Webhook::new);
        Self::start_with(name, settings, webhook)
    }

    /// [`Monitor::start`] with an explicit notifier (or none).
    pub fn start_with(
        name: impl Into<String>,
        settings: DriftSettings,
        webhook: Option<Webhook>,
    ) -> DriftHandle {
        let (tx, rx) = mpsc::channel(QUEUE);
        let seed = mix(SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64));
        let shared = Arc::new(Shared {
            name: name.into(),
            counter: AtomicU64::new(0),
            dropped: AtomicU64::new(0),
            sample_size: settings.sample_size,
            seed,
            tx,
            latest: RwLock::new(None),
            drifted: AtomicBool::new(false),
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(run(weak, rx, settings, webhook));
        DriftHandle { shared }
    }
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn run(
    shared: std::sync::Weak<Shared>,
    mut rx: mpsc::Receiver<Sample>,
    settings: DriftSettings,
    webhook: Option<Webhook>,
) {
    let k = settings.sample_size;
    let mut slots: Vec<Option<(u64, Row)>> = (0..k).map(|_| None).collect();
    let mut epoch: u64 = 0;
    let mut window_start = unix_ms();
    let start = tokio::time::Instant::now() + settings.window;
    let mut tick = tokio::time::interval_at(start, settings.window);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let options = CompareOptions {
        per_column: settings.per_column.clone(),
        drift_share: settings.drift_share,
    };
    // The queue is drained on a timer rather than awaited: a receiver that
    // awaits registers a waker, and then every `try_send` on the request
    // path wakes this task, often a parked worker thread (a futex call per
    // sampled request). Drained every DRAIN, a sampled request costs the
    // send alone.
    let mut drain_tick = tokio::time::interval(DRAIN);
    drain_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = drain_tick.tick() => {
                if !drain(&mut rx, &mut slots, epoch) {
                    return;
                }
            }
            _ = tick.tick() => {
                if !drain(&mut rx, &mut slots, epoch) {
                    return;
                }
                let Some(shared) = shared.upgrade() else { return };
                epoch += 1;
                let old = shared.counter.swap(epoch << INDEX_BITS, Ordering::Relaxed);
                let dropped = shared.dropped.swap(0, Ordering::Relaxed);
                let end = unix_ms();
                let rows: Vec<Row> = slots.iter_mut().filter_map(|s| s.take().map(|(_, r)| r)).collect();
                let window = WindowInfo {
                    index: epoch - 1,
                    start_unix_ms: window_start,
                    end_unix_ms: end,
                    requests: old & INDEX_MASK,
                    sampled: rows.len(),
                    dropped,
                };
                window_start = end;
                let report = evaluate(&shared.name, &settings, &options, window, &rows);
                publish(&shared, report, webhook.as_ref());
            }
        }
    }
}

/// How often the background task takes the sampled rows off the queue
/// (at [`QUEUE`] rows, up to ~100 000 sampled rows a second get through).
pub const DRAIN: Duration = Duration::from_millis(10);

/// Moves the queued rows into the window's slots; false once every handle
/// is gone.
fn drain(rx: &mut mpsc::Receiver<Sample>, slots: &mut [Option<(u64, Row)>], epoch: u64) -> bool {
    loop {
        match rx.try_recv() {
            Ok(Sample { ticket, row }) => {
                if ticket.epoch != epoch || ticket.slot >= slots.len() {
                    continue;
                }
                let slot = &mut slots[ticket.slot];
                if slot.as_ref().is_none_or(|(i, _)| *i < ticket.index) {
                    *slot = Some((ticket.index, row));
                }
            }
            Err(mpsc::error::TryRecvError::Empty) => return true,
            Err(mpsc::error::TryRecvError::Disconnected) => return false,
        }
    }
}

/// Transposes sampled rows into columns of the reference's kinds; a value of
/// the wrong kind is skipped (and so is a missing one).
pub fn columns_of(kinds: &[ColumnKind], rows: &[Row]) -> Vec<ColumnValues> {
    kinds
        .iter()
        .enumerate()
        .map(|(i, kind)| match kind {
            ColumnKind::Numerical => ColumnValues::Numerical(
                rows.iter()
                    .filter_map(|r| match r.get(i) {
                        Some(Value::Num(x)) => Some(*x),
                        _ => None,
                    })
                    .collect(),
            ),
            ColumnKind::Categorical => ColumnValues::Categorical(
                rows.iter()
                    .filter_map(|r| match r.get(i) {
                        Some(Value::Cat(s)) => Some(s.to_string()),
                        _ => None,
                    })
                    .collect(),
            ),
        })
        .collect()
}

fn evaluate(
    name: &str,
    settings: &DriftSettings,
    options: &CompareOptions,
    window: WindowInfo,
    rows: &[Row],
) -> DriftReport {
    if rows.len() < settings.min_samples {
        return DriftReport {
            name: name.to_string(),
            window,
            tested: false,
            columns: Vec::new(),
            drifted_columns: 0,
            share: 0.0,
            drift_share: settings.drift_share,
            dataset_drift: false,
        };
    }
    let kinds: Vec<ColumnKind> = settings.reference.columns.iter().map(|c| c.kind).collect();
    let current = columns_of(&kinds, rows);
    let cmp = compare(&settings.reference, &current, options);
    DriftReport {
        name: name.to_string(),
        window,
        tested: true,
        columns: cmp.columns,
        drifted_columns: cmp.drifted_columns,
        share: cmp.share,
        drift_share: settings.drift_share,
        dataset_drift: cmp.dataset_drift,
    }
}

fn publish(shared: &Shared, report: DriftReport, webhook: Option<&Webhook>) {
    let report = Arc::new(report);
    let labels = [("model", shared.name.clone())];
    metrics::gauge!("convoy_drift_window_samples", &labels).set(report.window.sampled as f64);
    if report.tested {
        metrics::gauge!("convoy_drift_share", &labels).set(report.share);
        metrics::gauge!("convoy_drift_detected", &labels).set(if report.dataset_drift {
            1.0
        } else {
            0.0
        });
        let was = shared.drifted.swap(report.dataset_drift, Ordering::Relaxed);
        if report.dataset_drift && !was {
            tracing::warn!(
                model = %shared.name,
                share = report.share,
                "data drift detected"
            );
            if let Some(hook) = webhook {
                hook.notify(report.clone());
            }
        }
    }
    *shared.latest.write() = Some(report);
}
