//! The worker's private queue: one group per key, one FIFO lane per
//! priority inside each group.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use crate::error::DeadlineExceeded;
use crate::shared::Item;

fn answer_expired<Req, Resp>(item: Item<Req, Resp>) {
    let _ = item.tx.send(Err(DeadlineExceeded::new().into()));
}

const LANES: usize = 3;
/// Up to this many groups stay allocated when they run empty.
const KEEP_EMPTY_GROUPS: usize = 8;

/// Lane 0 holds the highest priority.
fn lane(item_priority: crate::Priority) -> usize {
    LANES - 1 - item_priority as usize
}

pub(crate) struct Group<Req, Resp> {
    pub(crate) key: u64,
    lanes: [VecDeque<Item<Req, Resp>>; LANES],
    len: usize,
    /// Total cost queued; `u128` so that no sum of `u64` costs overflows.
    cost: u128,
}

impl<Req, Resp> Group<Req, Resp> {
    fn new(key: u64) -> Self {
        Self {
            key,
            lanes: Default::default(),
            len: 0,
            cost: 0,
        }
    }

    fn top_lane(&self) -> usize {
        self.lanes
            .iter()
            .position(|l| !l.is_empty())
            .unwrap_or(LANES)
    }

    fn oldest(&self) -> Option<Instant> {
        self.lanes
            .iter()
            .filter_map(|l| l.front().map(|i| i.enqueued))
            .min()
    }
}

/// Dispatch settings the worker reads from the live configuration.
#[derive(Debug, Clone)]
pub(crate) struct Policy {
    pub(crate) max_batch_size: usize,
    /// The adaptive cap (`usize::MAX` when off); batches stay below both.
    pub(crate) cap: usize,
    pub(crate) max_wait: Duration,
    pub(crate) preferred: Vec<usize>,
    pub(crate) max_cost: Option<u64>,
    /// With [`WaitFor::RecentLoad`](crate::WaitFor::RecentLoad): the
    /// callers the batcher holds now (queued or running) and its recent
    /// peak; a batch stops waiting once the first reaches the second.
    pub(crate) load: Option<Load>,
}

/// The batcher's callers now and at their recent peak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Load {
    pub(crate) now: usize,
    pub(crate) peak: usize,
    /// When the latest batch finished.
    pub(crate) since: Option<Instant>,
}

impl Policy {
    /// How many items of `group` to dispatch now, or when to look again.
    fn decide<Req, Resp>(&self, group: &Group<Req, Resp>, now: Instant) -> Result<usize, Instant> {
        let n = group.len;
        let cap = self.max_batch_size.min(self.cap);
        let mut oldest = group.oldest().unwrap_or(now);
        if let Some(load) = &self.load {
            // Items queued while the last batch ran have waited for room,
            // not for company: the wait for the callers expected back
            // starts when that batch finished.
            oldest = load.since.map_or(oldest, |since| oldest.max(since));
        }
        // An unreachable instant means "wait for a full batch"; a far
        // deadline stands in for it.
        let expires = oldest
            .checked_add(self.max_wait)
            .unwrap_or_else(|| far_future(now));
        // Under `RecentLoad` the callers expected back are back (a lone
        // caller is its own peak): no reason to wait longer.
        let back = self.load.is_some_and(|l| l.now >= l.peak.min(cap));
        let waited_out = self.max_wait.is_zero() || now >= expires || back;
        if waited_out {
            return Ok(n.min(cap));
        }
        if !self.preferred.is_empty() {
            let limit = n.min(cap);
            return match self.preferred.iter().rev().find(|&&p| p <= limit) {
                Some(&p) => Ok(p),
                None => Err(expires),
            };
        }
        let full = n >= cap || self.max_cost.is_some_and(|c| group.cost >= u128::from(c));
        if full {
            Ok(cap)
        } else {
            Err(expires)
        }
    }
}

/// About thirty years from `now`: later than any wait that matters, and
/// far enough from the end of time for timers to handle.
pub(crate) fn far_future(now: Instant) -> Instant {
    now + Duration::from_secs(86_400 * 365 * 30)
}

/// What the queue says the worker should do next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pick {
    /// Dispatch up to `target` items of group `group`.
    Go { group: usize, target: usize },
    /// Nothing may go before this instant (a group is waiting to fill).
    WaitUntil(Instant),
    /// Nothing queued.
    Empty,
}

/// Items removed from the queue while forming a batch or sweeping.
#[derive(Debug, Default)]
pub(crate) struct Removed {
    pub(crate) expired: u64,
    pub(crate) cancelled: u64,
}

pub(crate) struct PendingQueue<Req, Resp> {
    groups: Vec<Group<Req, Resp>>,
    index: HashMap<u64, usize>,
    last: usize,
    /// Where the round-robin over groups resumes.
    next: usize,
    len: usize,
}

impl<Req, Resp> PendingQueue<Req, Resp> {
    pub(crate) fn new() -> Self {
        Self {
            groups: Vec::new(),
            index: HashMap::new(),
            last: 0,
            next: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub(crate) fn push(&mut self, item: Item<Req, Resp>) {
        let gi = self.group_for(item.key);
        let g = &mut self.groups[gi];
        g.len += 1;
        g.cost += u128::from(item.cost);
        g.lanes[lane(item.priority)].push_back(item);
        self.len += 1;
    }

    fn group_for(&mut self, key: u64) -> usize {
        if self.groups.get(self.last).is_some_and(|g| g.key == key) {
            return self.last;
        }
        let i = match self.index.get(&key) {
            Some(&i) => i,
            None => {
                self.groups.push(Group::new(key));
                let i = self.groups.len() - 1;
                self.index.insert(key, i);
                i
            }
        };
        self.last = i;
        i
    }

    fn remove_group(&mut self, i: usize) {
        let g = self.groups.swap_remove(i);
        self.index.remove(&g.key);
        if let Some(moved) = self.groups.get(i) {
            self.index.insert(moved.key, i);
        }
        if self.next > self.groups.len() {
            self.next = 0;
        }
    }

    /// Highest priority first; among equal priorities, round-robin over
    /// keys so that none starves.
    pub(crate) fn pick(&self, now: Instant, policy: &Policy) -> Pick {
        let count = self.groups.len();
        if self.len == 0 || count == 0 {
            return Pick::Empty;
        }
        let mut best: Option<(usize, usize, usize)> = None;
        let mut wake: Option<Instant> = None;
        for k in 0..count {
            let i = (self.next + k) % count;
            let g = &self.groups[i];
            if g.len == 0 {
                continue;
            }
            let top = g.top_lane();
            if best.is_some_and(|(_, best_top, _)| top >= best_top) {
                continue;
            }
            match policy.decide(g, now) {
                Ok(target) => best = Some((i, top, target)),
                Err(at) => wake = Some(wake.map_or(at, |w| w.min(at))),
            }
        }
        match (best, wake) {
            (Some((group, _, target)), _) => Pick::Go { group, target },
            (None, Some(at)) => Pick::WaitUntil(at),
            (None, None) => Pick::Empty,
        }
    }

    /// Removes the expired and cancelled items of group `gi` among those
    /// the next [`take`](Self::take) of `target` items would reach (expired
    /// ones are answered). Returns whether anything was removed. Run before
    /// reserving the batch service, so that a reservation always has live
    /// items to send.
    pub(crate) fn prune(
        &mut self,
        gi: usize,
        target: usize,
        now: Instant,
        removed: &mut Removed,
    ) -> bool {
        let g = &mut self.groups[gi];
        let mut live = 0usize;
        let mut gone = 0usize;
        for lane in g.lanes.iter_mut() {
            let mut i = 0;
            while live < target && i < lane.len() {
                let item = &lane[i];
                let cancelled = item.tx.is_closed();
                if !cancelled && item.deadline.is_none_or(|d| d > now) {
                    live += 1;
                    i += 1;
                    continue;
                }
                let item = lane.remove(i).expect("index in range");
                g.cost -= u128::from(item.cost);
                gone += 1;
                if cancelled {
                    removed.cancelled += 1;
                } else {
                    removed.expired += 1;
                    answer_expired(item);
                }
            }
        }
        g.len -= gone;
        self.len -= gone;
        if g.len == 0 && self.groups.len() > KEEP_EMPTY_GROUPS {
            self.remove_group(gi);
        }
        gone > 0
    }

    /// Takes up to `target` items of group `gi`, highest priority first and
    /// FIFO within a priority, within the cost cap, after a
    /// [`prune`](Self::prune) at the same instant. Hands the taken items to
    /// `take` and returns how many there were.
    pub(crate) fn take(
        &mut self,
        gi: usize,
        target: usize,
        max_cost: Option<u64>,
        mut take: impl FnMut(Item<Req, Resp>),
    ) -> usize {
        let g = &mut self.groups[gi];
        let mut taken = 0usize;
        let mut cost = 0u128;
        'lanes: for lane in g.lanes.iter_mut() {
            while taken < target {
                let Some(front) = lane.front() else {
                    break;
                };
                let front_cost = u128::from(front.cost);
                if let Some(max) = max_cost {
                    if taken > 0 && cost + front_cost > u128::from(max) {
                        break 'lanes;
                    }
                }
                let item = lane.pop_front().expect("front exists");
                g.len -= 1;
                g.cost -= front_cost;
                self.len -= 1;
                cost += front_cost;
                taken += 1;
                take(item);
            }
        }
        // Empty groups are kept for reuse while there are few of them.
        if g.len == 0 && self.groups.len() > KEEP_EMPTY_GROUPS {
            self.remove_group(gi);
            self.next = gi;
        } else {
            self.next = gi + 1;
        }
        taken
    }

    /// Removes expired and cancelled items everywhere. Returns the earliest
    /// deadline still queued.
    pub(crate) fn sweep(&mut self, now: Instant, removed: &mut Removed) -> Option<Instant> {
        let mut earliest: Option<Instant> = None;
        let mut gone = 0usize;
        for g in &mut self.groups {
            for lane in g.lanes.iter_mut() {
                let before = lane.len();
                let mut kept = VecDeque::with_capacity(before);
                for item in lane.drain(..) {
                    if item.tx.is_closed() {
                        removed.cancelled += 1;
                        g.cost -= u128::from(item.cost);
                    } else if item.deadline.is_some_and(|d| d <= now) {
                        removed.expired += 1;
                        g.cost -= u128::from(item.cost);
                        answer_expired(item);
                    } else {
                        if let Some(d) = item.deadline {
                            earliest = Some(earliest.map_or(d, |e| e.min(d)));
                        }
                        kept.push_back(item);
                    }
                }
                let dropped = before - kept.len();
                g.len -= dropped;
                gone += dropped;
                *lane = kept;
            }
        }
        self.len -= gone;
        let mut i = 0;
        while i < self.groups.len() {
            if self.groups[i].len == 0 {
                self.remove_group(i);
            } else {
                i += 1;
            }
        }
        earliest
    }

    /// Every queued item, for shutdown.
    pub(crate) fn drain_all(&mut self) -> impl Iterator<Item = Item<Req, Resp>> + '_ {
        self.len = 0;
        self.index.clear();
        self.groups
            .drain(..)
            .flat_map(|g| g.lanes.into_iter().flatten())
    }
}
