use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::permit::{Acquire, SlotPermit};
use crate::error::{BackendError, WaitQueueFull};
use crate::metrics::TenantMetrics;
use crate::priority::Priority;

/// Initial guess of a slot hold time, in nanoseconds (1 ms).
const INITIAL_HOLD_NS: f64 = 1e6;
/// Weight of a new sample in the hold-time average.
const EWMA: f64 = 0.2;

#[derive(Debug)]
pub(crate) struct Gate {
    slots: u32,
    /// Most acquires one tenant may have waiting.
    max_waiting: usize,
    state: Mutex<GateState>,
}

#[derive(Debug)]
struct GateState {
    free: u32,
    vclock: f64,
    next_seq: u64,
    tenants: HashMap<u32, GateTenant>,
}

/// Waiters in priority order (highest first), FIFO within a priority.
type WaitKey = (std::cmp::Reverse<u8>, u64);

#[derive(Debug)]
struct Waiter {
    tx: oneshot::Sender<SlotPermit>,
    since: Instant,
}

#[derive(Debug)]
struct GateTenant {
    weight: f64,
    priority: Priority,
    finish: f64,
    avg_hold_ns: f64,
    waiters: BTreeMap<WaitKey, Waiter>,
    grants: u64,
    busy_ns: u64,
    metrics: TenantMetrics,
}

/// Slot use of one tenant so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotUsage {
    /// Slots granted.
    pub grants: u64,
    /// Total time slots were held, in nanoseconds.
    pub busy_ns: u64,
    /// Acquires waiting now.
    pub waiting: usize,
}

impl Gate {
    pub(crate) fn new(slots: u32, max_waiting: usize) -> Arc<Self> {
        Arc::new(Self {
            slots,
            max_waiting,
            state: Mutex::new(GateState {
                free: slots,
                vclock: 0.0,
                next_seq: 0,
                tenants: HashMap::new(),
            }),
        })
    }

    pub(crate) fn slots(&self) -> u32 {
        self.slots
    }

    pub(crate) fn free_slots(&self) -> u32 {
        self.state.lock().free
    }

    pub(crate) fn add_tenant(
        &self,
        id: u32,
        weight: u32,
        priority: Priority,
        metrics: TenantMetrics,
    ) {
        let mut st = self.state.lock();
        let vclock = st.vclock;
        st.tenants.insert(
            id,
            GateTenant {
                weight: f64::from(weight.max(1)),
                priority,
                finish: vclock,
                avg_hold_ns: INITIAL_HOLD_NS,
                waiters: BTreeMap::new(),
                grants: 0,
                busy_ns: 0,
                metrics,
            },
        );
    }

    pub(crate) fn remove_tenant(&self, id: u32) {
        // Waiters hold the tenant alive, so none are left here; dropping
        // the entry is enough.
        self.state.lock().tenants.remove(&id);
    }

    /// Starts waiting for a slot (granted at once when one is free). The
    /// returned future keeps `owner` (the tenant) alive while it waits, so
    /// the tenant stays registered; a tenant with `max_waiting` acquires
    /// waiting already gets [`WaitQueueFull`] at once.
    pub(crate) fn acquire(
        self: &Arc<Self>,
        tenant: u32,
        name: &str,
        owner: Arc<dyn Any + Send + Sync>,
        priority: Priority,
    ) -> Acquire {
        let (tx, rx) = oneshot::channel();
        let mut st = self.state.lock();
        let now = Instant::now();
        if st.free > 0 && st.tenants.contains_key(&tenant) {
            // Free slots imply nobody waits (dispatch runs on every release).
            let permit = self.grant(&mut st, tenant, now, now);
            drop(st);
            return Acquire::ready(permit);
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        let key = (std::cmp::Reverse(priority as u8), seq);
        match st.tenants.get_mut(&tenant) {
            Some(t) if t.waiters.len() >= self.max_waiting => {
                drop(st);
                Acquire::failed(WaitQueueFull::new(name, self.max_waiting).into())
            }
            Some(t) => {
                t.waiters.insert(key, Waiter { tx, since: now });
                drop(st);
                Acquire::waiting(self.clone(), tenant, key, rx, owner)
            }
            None => {
                // A live tenant is always registered (its handles and
                // waiting acquires keep it so): never hand out a slot
                // outside the gate.
                drop(st);
                Acquire::failed(
                    BackendError::new(format!("tenant {name:?} is not admitted to the pool"))
                        .into(),
                )
            }
        }
    }

    /// Takes a free slot for `tenant` and advances its virtual finish tag.
    fn grant(
        self: &Arc<Self>,
        st: &mut GateState,
        tenant: u32,
        since: Instant,
        now: Instant,
    ) -> SlotPermit {
        st.free -= 1;
        let vclock = st.vclock;
        let t = st
            .tenants
            .get_mut(&tenant)
            .expect("granting to a registered tenant");
        let start = t.finish.max(vclock);
        let charge = t.avg_hold_ns / t.weight;
        t.finish = start + charge;
        t.grants += 1;
        st.vclock = start;
        t.metrics.slot_wait(now.saturating_duration_since(since));
        SlotPermit::new(self.clone(), tenant, now, charge)
    }

    /// Called by a dropped permit: accounts the hold and hands the slot on.
    pub(crate) fn release(self: &Arc<Self>, tenant: u32, granted_at: Instant, charged: f64) {
        let mut st = self.state.lock();
        let held = Instant::now().saturating_duration_since(granted_at);
        if let Some(t) = st.tenants.get_mut(&tenant) {
            let held_ns = held.as_nanos() as f64;
            t.metrics.slot_busy(held);
            t.busy_ns = t
                .busy_ns
                .saturating_add(u64::try_from(held.as_nanos()).unwrap_or(u64::MAX));
            // Correct the estimate charged at grant time to what was used.
            t.finish += held_ns / t.weight - charged;
            t.avg_hold_ns = (1.0 - EWMA) * t.avg_hold_ns + EWMA * held_ns.max(1.0);
        }
        st.free += 1;
        self.dispatch(&mut st);
    }

    /// Hands free slots to waiters, smallest start tag first.
    fn dispatch(self: &Arc<Self>, st: &mut GateState) {
        let now = Instant::now();
        while st.free > 0 {
            let vclock = st.vclock;
            let pick = st
                .tenants
                .iter()
                .filter(|(_, t)| !t.waiters.is_empty())
                .map(|(&id, t)| {
                    // Start-time fair queueing: smallest virtual start first,
                    // then smallest finish, then priority.
                    let start = t.finish.max(vclock);
                    let finish = start + t.avg_hold_ns / t.weight;
                    (start, finish, std::cmp::Reverse(t.priority as u8), id)
                })
                .min_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
            let Some((_, _, _, id)) = pick else { return };
            let t = st.tenants.get_mut(&id).expect("picked tenant exists");
            let (_, waiter) = t.waiters.pop_first().expect("picked tenant waits");
            if waiter.tx.is_closed() {
                continue;
            }
            let permit = self.grant(st, id, waiter.since, now);
            if let Err(mut permit) = waiter.tx.send(permit) {
                // The waiter left between the check and the send: undo.
                permit.disarm();
                st.free += 1;
                if let Some(t) = st.tenants.get_mut(&id) {
                    t.finish -= t.avg_hold_ns / t.weight;
                }
            }
        }
    }

    /// A waiting acquire was dropped before it got a slot.
    pub(crate) fn cancel(&self, tenant: u32, key: WaitKey) {
        if let Some(t) = self.state.lock().tenants.get_mut(&tenant) {
            t.waiters.remove(&key);
        }
    }

    /// Slot use of a tenant.
    pub(crate) fn usage(&self, tenant: u32) -> SlotUsage {
        self.state
            .lock()
            .tenants
            .get(&tenant)
            .map_or(SlotUsage::default(), |t| SlotUsage {
                grants: t.grants,
                busy_ns: t.busy_ns,
                waiting: t.waiters.len(),
            })
    }
}

pub(crate) type Key = WaitKey;
