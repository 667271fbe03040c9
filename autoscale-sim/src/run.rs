//! The discrete-event loop.
//!
//! Time is virtual, in integer nanoseconds, so runs are exact and
//! repeatable. Events are arrivals (drawn lazily, one at a time), batch
//! completions (a heap with one entry per running batch, never per
//! request), replica readiness (a FIFO, since cold starts all take the same
//! time) and sample ticks. Requests live only as their arrival time in one
//! bounded ring buffer, so a run allocates nothing per request.
//!
//! A request's latency is known when its batch is dispatched (service time
//! is deterministic), so latency is recorded then; the latency quantiles of
//! a load sample therefore describe the requests *dispatched* in the
//! interval, at most one batch time ahead of their completion.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::time::Duration;

use hdrhistogram::Histogram;

use crate::config::{SimConfig, SimConfigError};
use crate::oracle::Oracle;
use crate::report::{Report, TimelinePoint};
use crate::trace::Trace;
use convoy_autoscale::{Engine, LoadSample, ReplicaCounts};

/// Anything the simulator can drive: an [`Engine`] (a policy with its guard
/// rails), a [`FixedReplicas`] baseline, or your own.
///
/// Each sample interval the simulator calls [`observe`](Controller::observe)
/// with a deployment-level [`LoadSample`], and each
/// [`interval`](Controller::interval) it asks [`desired`](Controller::desired)
/// for a replica count and applies it.
pub trait Controller {
    /// Name shown in reports.
    fn name(&self) -> &str;
    /// How often [`desired`](Controller::desired) is called (rounded up to
    /// whole sample intervals).
    fn interval(&self) -> Duration;
    /// Replicas ready at time zero.
    fn initial_replicas(&self) -> u32;
    /// Takes the load measured over the sample interval ending at `now`.
    fn observe(&mut self, now: Duration, sample: &LoadSample);
    /// Returns the replica count wanted at `now`.
    fn desired(&mut self, now: Duration, counts: ReplicaCounts) -> u32;
}

impl Controller for Engine {
    fn name(&self) -> &str {
        self.policy().name()
    }
    fn interval(&self) -> Duration {
        self.config().interval
    }
    fn initial_replicas(&self) -> u32 {
        self.config().initial()
    }
    fn observe(&mut self, now: Duration, sample: &LoadSample) {
        self.record(now, *sample);
    }
    fn desired(&mut self, now: Duration, counts: ReplicaCounts) -> u32 {
        self.evaluate(now, counts).desired
    }
}

/// A deterministic simulation: a [`SimConfig`] that can replay any
/// [`Trace`] against any [`Controller`].
///
/// ```
/// use std::time::Duration;
/// use convoy_autoscale_sim::{FixedReplicas, SimConfig, Simulation, Trace};
///
/// let sim = Simulation::new(SimConfig::default()).unwrap();
/// let trace = Trace::constant(200.0, Duration::from_secs(300)).unwrap();
/// let report = sim.run(&trace, &mut FixedReplicas::new(2));
/// assert_eq!(report.arrivals, report.served + report.dropped + report.unserved);
/// assert!(report.violating_fraction() < 0.01);
/// ```
#[derive(Debug, Clone)]
pub struct Simulation {
    config: SimConfig,
}

/// A [`Controller`] that never scales: a fixed deployment.
#[derive(Debug, Clone)]
pub struct FixedReplicas {
    replicas: u32,
    name: String,
}

impl FixedReplicas {
    /// Always `replicas` replicas.
    pub fn new(replicas: u32) -> Self {
        Self {
            replicas,
            name: format!("Fixed({replicas})"),
        }
    }
}

impl Controller for FixedReplicas {
    fn name(&self) -> &str {
        &self.name
    }
    fn interval(&self) -> Duration {
        Duration::from_secs(60)
    }
    fn initial_replicas(&self) -> u32 {
        self.replicas
    }
    fn observe(&mut self, _now: Duration, _sample: &LoadSample) {}
    fn desired(&mut self, _now: Duration, _counts: ReplicaCounts) -> u32 {
        self.replicas
    }
}

const NANOS: u64 = 1_000_000_000;
const MINUTE_NS: u64 = 60 * NANOS;
/// Upper bound on replicas the simulator will start; a policy asking for
/// more is clamped (and it shows in the report's peak).
const MAX_REPLICAS: u32 = 10_000;
/// Latencies above this are recorded as this (an hour).
const MAX_LATENCY_NS: u64 = 3_600 * NANOS;

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

fn histogram() -> Histogram<u64> {
    // 1 µs .. 1 h at 2 significant digits: a few thousand buckets.
    Histogram::new_with_bounds(1_000, MAX_LATENCY_NS, 2).expect("static histogram bounds are valid")
}

fn quantile(h: &Histogram<u64>, q: f64) -> Option<Duration> {
    (!h.is_empty()).then(|| Duration::from_nanos(h.value_at_quantile(q)))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ReplicaState {
    Starting,
    Ready,
    Draining,
    Stopped,
}

#[derive(Debug, Clone)]
struct Replica {
    state: ReplicaState,
    busy: u32,
    started: u64,
    stopped: u64,
}

#[derive(Debug, Default)]
struct Tally {
    arrivals: u64,
    completions: u64,
    dropped: u64,
    dispatched: u64,
    batches: u64,
    busy_ns: u64,
    wait_ns: u128,
}

/// The state of one run.
#[derive(Debug)]
struct World {
    slo_ns: u64,
    max_batch: usize,
    overhead_ns: u64,
    per_item_ns: u64,
    slots: u32,
    cold_start_ns: u64,
    queue_capacity: usize,

    queue: VecDeque<u64>,
    running: u64,
    completions: BinaryHeap<Reverse<(u64, u32, u32)>>,
    replicas: Vec<Replica>,
    /// Ready replicas (not draining), for picking whom to drain.
    ready_ids: Vec<u32>,
    free: Vec<u32>,
    starting: VecDeque<(u64, u32)>,
    n_starting: u32,
    n_ready: u32,

    interval: Tally,
    interval_hist: Histogram<u64>,

    arrivals: u64,
    served: u64,
    dropped: u64,
    over_slo: u64,
    cold_starts: u64,
    direction_changes: u64,
    last_direction: i8,
    peak_replicas: u32,
}

impl World {
    fn current(&self) -> u32 {
        self.n_starting + self.n_ready
    }

    fn take_free_slot(&mut self) -> Option<u32> {
        while let Some(r) = self.free.pop() {
            // Entries of replicas that started draining are stale.
            if self.replicas[r as usize].state == ReplicaState::Ready {
                return Some(r);
            }
        }
        None
    }

    fn dispatch(&mut self, now: u64) {
        while !self.queue.is_empty() {
            let Some(r) = self.take_free_slot() else {
                return;
            };
            let n = self.queue.len().min(self.max_batch);
            let finish = now + self.overhead_ns + self.per_item_ns * n as u64;
            for arrived in self.queue.drain(..n) {
                let latency = finish - arrived;
                self.interval.wait_ns += u128::from(now - arrived);
                self.over_slo += u64::from(latency > self.slo_ns);
                self.interval_hist
                    .saturating_record(latency.clamp(1_000, MAX_LATENCY_NS));
            }
            let n = n as u32;
            self.interval.dispatched += u64::from(n);
            self.interval.batches += 1;
            self.interval.busy_ns += finish - now;
            self.served += u64::from(n);
            self.running += u64::from(n);
            self.replicas[r as usize].busy += 1;
            self.completions.push(Reverse((finish, r, n)));
        }
    }

    fn arrive(&mut self, now: u64) {
        self.arrivals += 1;
        self.interval.arrivals += 1;
        if self.queue.len() >= self.queue_capacity {
            self.dropped += 1;
            self.interval.dropped += 1;
            return;
        }
        self.queue.push_back(now);
        self.dispatch(now);
    }

    fn complete(&mut self, now: u64, r: u32, n: u32) {
        self.running -= u64::from(n);
        self.interval.completions += u64::from(n);
        let replica = &mut self.replicas[r as usize];
        replica.busy -= 1;
        match replica.state {
            ReplicaState::Ready => self.free.push(r),
            ReplicaState::Draining if replica.busy == 0 => {
                replica.state = ReplicaState::Stopped;
                replica.stopped = now;
            }
            _ => {}
        }
        self.dispatch(now);
    }

    fn become_ready(&mut self, now: u64, r: u32) {
        let replica = &mut self.replicas[r as usize];
        if replica.state != ReplicaState::Starting {
            return; // cancelled while starting
        }
        replica.state = ReplicaState::Ready;
        self.ready_ids.push(r);
        self.n_starting -= 1;
        self.n_ready += 1;
        self.free
            .extend(std::iter::repeat_n(r, self.slots as usize));
        self.dispatch(now);
    }

    fn start_replica(&mut self, now: u64, cold: bool) {
        let id = u32::try_from(self.replicas.len()).expect("replica count is bounded");
        self.replicas.push(Replica {
            state: ReplicaState::Starting,
            busy: 0,
            started: now,
            stopped: u64::MAX,
        });
        self.n_starting += 1;
        if cold {
            self.cold_starts += 1;
        }
        if cold && self.cold_start_ns > 0 {
            self.starting.push_back((now + self.cold_start_ns, id));
        } else {
            self.become_ready(now, id);
        }
    }

    fn scale_to(&mut self, now: u64, desired: u32) {
        let desired = desired.min(MAX_REPLICAS);
        let current = self.current();
        if desired == current {
            return;
        }
        let direction: i8 = if desired > current { 1 } else { -1 };
        if self.last_direction != 0 && direction != self.last_direction {
            self.direction_changes += 1;
        }
        self.last_direction = direction;
        if desired > current {
            for _ in current..desired {
                self.start_replica(now, true);
            }
        } else {
            let mut excess = current - desired;
            // Cancel the newest starting replicas first: they serve nothing yet.
            while excess > 0 {
                let Some(&(_, r)) = self.starting.back() else {
                    break;
                };
                self.starting.pop_back();
                let replica = &mut self.replicas[r as usize];
                if replica.state == ReplicaState::Starting {
                    replica.state = ReplicaState::Stopped;
                    replica.stopped = now;
                    self.n_starting -= 1;
                    excess -= 1;
                }
            }
            if excess > 0 {
                // Drain the least busy ready replicas (newest on ties).
                let replicas = &self.replicas;
                self.ready_ids
                    .sort_unstable_by_key(|&r| (replicas[r as usize].busy, Reverse(r)));
                let k = (excess as usize).min(self.ready_ids.len());
                for r in self.ready_ids.drain(..k) {
                    let replica = &mut self.replicas[r as usize];
                    if replica.busy == 0 {
                        replica.state = ReplicaState::Stopped;
                        replica.stopped = now;
                    } else {
                        replica.state = ReplicaState::Draining;
                    }
                    self.n_ready -= 1;
                }
            }
        }
        self.peak_replicas = self.peak_replicas.max(self.current());
    }

    fn sample(&self) -> LoadSample {
        let t = &self.interval;
        let h = &self.interval_hist;
        let queued = self.queue.len() as f64;
        let running = self.running as f64;
        LoadSample {
            ongoing: queued + running,
            queued,
            running,
            arrivals: t.arrivals,
            completions: t.completions,
            latency_p50: quantile(h, 0.50),
            latency_p90: quantile(h, 0.90),
            latency_p99: quantile(h, 0.99),
            queue_wait: (t.dispatched > 0)
                .then(|| Duration::from_nanos((t.wait_ns / u128::from(t.dispatched)) as u64)),
            batches: t.batches,
            batch_items: t.dispatched,
            batch_busy: Duration::from_nanos(t.busy_ns),
            replicas_reporting: None,
        }
    }
}

impl Simulation {
    /// Validates `config`.
    pub fn new(config: SimConfig) -> Result<Self, SimConfigError> {
        config.validate()?;
        Ok(Self { config })
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.config
    }

    /// Replays `trace` against `autoscaler` and reports what happened.
    pub fn run(&self, trace: &Trace, controller: &mut dyn Controller) -> Report {
        let c = &self.config;
        let sample_ns = nanos(c.sample_interval);
        let timeline_ns = nanos(c.timeline_interval);
        let eval_ns = nanos(controller.interval()).max(sample_ns);
        let trace_end = nanos(trace.duration());
        let hard_end = trace_end.saturating_add(nanos(c.drain));

        let mut w = World {
            slo_ns: nanos(c.slo),
            max_batch: c.replica.max_batch_size as usize,
            overhead_ns: nanos(c.replica.batch_overhead),
            per_item_ns: nanos(c.replica.per_item),
            slots: c.replica.slots,
            cold_start_ns: nanos(c.replica.cold_start),
            queue_capacity: c.queue_capacity,
            queue: VecDeque::with_capacity(c.queue_capacity.min(1 << 16)),
            running: 0,
            completions: BinaryHeap::new(),
            replicas: Vec::new(),
            ready_ids: Vec::new(),
            free: Vec::new(),
            starting: VecDeque::new(),
            n_starting: 0,
            n_ready: 0,
            interval: Tally::default(),
            interval_hist: histogram(),
            arrivals: 0,
            served: 0,
            dropped: 0,
            over_slo: 0,
            cold_starts: 0,
            direction_changes: 0,
            last_direction: 0,
            peak_replicas: 0,
        };
        for _ in 0..controller.initial_replicas().min(MAX_REPLICAS) {
            w.start_replica(0, false);
        }
        w.peak_replicas = w.current();

        let mut arrivals = trace.arrivals(c.seed);
        let mut next_arrival = arrivals.next_nanos().unwrap_or(u64::MAX);
        let mut next_tick = sample_ns;
        let mut next_eval = eval_ns;

        let mut minute_hist = histogram();
        let mut total_hist = histogram();
        let mut timeline_hist = histogram();
        let mut windows = 0u64;
        let mut windows_over = 0u64;
        let mut timeline = Vec::new();
        let mut timeline_arrivals = 0u64;

        loop {
            let t_done = w.completions.peek().map_or(u64::MAX, |e| e.0 .0);
            let t_ready = w.starting.front().map_or(u64::MAX, |e| e.0);
            if t_done <= t_ready && t_done <= next_arrival && t_done <= next_tick {
                let Reverse((t, r, n)) = w.completions.pop().expect("peeked");
                w.complete(t, r, n);
            } else if t_ready <= next_arrival && t_ready <= next_tick {
                let (t, r) = w.starting.pop_front().expect("peeked");
                w.become_ready(t, r);
            } else if next_arrival <= next_tick {
                w.arrive(next_arrival);
                next_arrival = arrivals.next_nanos().unwrap_or(u64::MAX);
            } else {
                let now = next_tick;
                if now > hard_end {
                    break;
                }
                let sample = w.sample();
                controller.observe(Duration::from_nanos(now), &sample);
                timeline_arrivals += w.interval.arrivals;
                minute_hist.add(&w.interval_hist).expect("same bounds");
                timeline_hist.add(&w.interval_hist).expect("same bounds");
                w.interval = Tally::default();
                w.interval_hist.reset();

                if now.is_multiple_of(MINUTE_NS) && now <= trace_end {
                    if !minute_hist.is_empty() {
                        windows += 1;
                        windows_over += u64::from(minute_hist.value_at_quantile(0.99) > w.slo_ns);
                        total_hist.add(&minute_hist).expect("same bounds");
                    }
                    minute_hist.reset();
                }
                if now.is_multiple_of(timeline_ns) && now <= trace_end {
                    let span = c.timeline_interval.as_secs_f64();
                    timeline.push(TimelinePoint {
                        at: Duration::from_nanos(now),
                        arrival_rps: timeline_arrivals as f64 / span,
                        trace_rps: trace.rate_at(Duration::from_nanos(now - timeline_ns / 2)),
                        replicas: w.current(),
                        ready: w.n_ready,
                        latency_p99: quantile(&timeline_hist, 0.99),
                    });
                    timeline_arrivals = 0;
                    timeline_hist.reset();
                }
                if now >= next_eval {
                    next_eval += eval_ns;
                    let counts = ReplicaCounts::new(w.current(), w.n_ready);
                    let desired = controller.desired(Duration::from_nanos(now), counts);
                    w.scale_to(now, desired);
                }
                next_tick += sample_ns;
                let idle = next_arrival == u64::MAX && w.queue.is_empty() && w.running == 0;
                if idle && now >= trace_end {
                    break;
                }
            }
        }
        // A partial last minute still counts as a window.
        if !minute_hist.is_empty() {
            windows += 1;
            windows_over += u64::from(minute_hist.value_at_quantile(0.99) > w.slo_ns);
            total_hist.add(&minute_hist).expect("same bounds");
        }

        let replica_seconds = w
            .replicas
            .iter()
            .map(|r| (r.stopped.min(trace_end) - r.started.min(trace_end)) as f64 / NANOS as f64)
            .sum();
        let oracle = Oracle::plan(trace, c);
        Report {
            policy: controller.name().to_owned(),
            trace: trace.name().to_owned(),
            duration: trace.duration(),
            slo: c.slo,
            arrivals: w.arrivals,
            served: w.served,
            dropped: w.dropped,
            unserved: w.queue.len() as u64,
            over_slo: w.over_slo,
            windows,
            windows_over_slo: windows_over,
            replica_seconds,
            oracle_replica_seconds: oracle.replica_seconds(),
            cold_starts: w.cold_starts,
            direction_changes: w.direction_changes,
            peak_replicas: w.peak_replicas,
            latency_p50: quantile(&total_hist, 0.50),
            latency_p99: quantile(&total_hist, 0.99),
            timeline,
        }
    }
}
