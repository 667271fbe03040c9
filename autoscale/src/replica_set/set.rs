use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::Waker;
use std::time::Duration;

use futures::future::BoxFuture;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::task::AbortHandle;
use tower::{BoxError, Service, ServiceExt};

use super::discover::ReplicaDiscover;
use super::error::ReplicaLimit;
use super::service::{Replica, ReplicaId, ReplicaLoad, SetCounters};
use crate::engine::{ReplicaCounts, Scaler};
use crate::error::{ConfigError, ConfigErrorKind};
use crate::signal::{LoadSample, SignalSource};

/// Configuration of a [`ReplicaSet`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaSetConfig {
    /// Hard cap on replicas; `scale_to` above it fails with [`ReplicaLimit`].
    /// Default 64. Must be ≥ 1.
    pub max_replicas: u32,
}

impl Default for ReplicaSetConfig {
    fn default() -> Self {
        Self { max_replicas: 64 }
    }
}

impl ReplicaSetConfig {
    /// Sets [`max_replicas`](Self::max_replicas).
    pub fn max_replicas(mut self, v: u32) -> Self {
        self.max_replicas = v;
        self
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_replicas == 0 {
            return Err(ConfigError::new(
                ConfigErrorKind::InvalidBounds,
                "max_replicas",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

type Factory<S> = Arc<dyn Fn() -> BoxFuture<'static, Result<S, BoxError>> + Send + Sync>;

pub(crate) struct ReadyReplica<S> {
    pub(crate) id: ReplicaId,
    /// `Some` until the discover stream hands it to the balancer.
    pub(crate) service: Option<S>,
    pub(crate) load: Arc<ReplicaLoad>,
}

pub(crate) struct State<S> {
    next_id: u64,
    starting: Vec<(ReplicaId, AbortHandle)>,
    pub(crate) ready: Vec<ReadyReplica<S>>,
    pub(crate) removals: VecDeque<ReplicaId>,
    draining: Vec<Arc<ReplicaLoad>>,
    pub(crate) waker: Option<Waker>,
    failed_starts: u64,
}

impl<S> State<S> {
    fn wake(&mut self) {
        if let Some(w) = self.waker.take() {
            w.wake();
        }
    }
}

pub(crate) struct Shared<S> {
    factory: Factory<S>,
    pub(crate) state: Mutex<State<S>>,
    pub(crate) counters: Arc<SetCounters>,
    config: ReplicaSetConfig,
}

/// An in-process [`Scaler`]: replicas of any tower service, made by a factory.
///
/// - **Start**: `scale_to(n)` above the current count spawns the factory for
///   each new replica; a replica is *ready* (counted in
///   [`ReplicaCounts::ready`] and announced to the balancer) only once its
///   async initialisation has finished and its `poll_ready` has returned ready.
/// - **Stop**: `scale_to(n)` below the current count removes starting replicas
///   first (their start is aborted), then ready replicas not yet handed to the
///   balancer, then the least loaded announced ones. Removal is graceful:
///   the balancer drops the replica on `Change::Remove`, and requests already
///   in flight finish (see [`draining`](ReplicaSet::draining)).
/// - **Discovery**: [`discover`](ReplicaSet::discover) is a
///   [`tower::discover::Discover`] stream of `Change::Insert` /
///   `Change::Remove`, ready for `tower::balance::p2c::Balance` (each
///   [`Replica`] implements [`tower::load::Load`] by in-flight requests).
/// - **Signals**: it is also a [`SignalSource`] (ongoing = in-flight requests,
///   arrivals and completions since the previous sample).
///
/// ```
/// use convoy_autoscale::{ReplicaCounts, ReplicaSet, ReplicaSetConfig, Scaler};
/// use tower::service_fn;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower::BoxError> {
/// let set = ReplicaSet::new(ReplicaSetConfig::default(), || async {
///     Ok::<_, tower::BoxError>(service_fn(|x: u32| async move { Ok::<_, tower::BoxError>(x * 2) }))
/// })?;
/// set.scale_to(3).await?;
/// assert_eq!(set.replicas().current, 3);
/// # Ok(())
/// # }
/// ```
pub struct ReplicaSet<S> {
    shared: Arc<Shared<S>>,
}

impl<S> Clone for ReplicaSet<S> {
    fn clone(&self) -> Self {
        Self {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> fmt::Debug for ReplicaSet<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.shared.state.lock();
        f.debug_struct("ReplicaSet")
            .field("starting", &state.starting.len())
            .field("ready", &state.ready.len())
            .field("draining", &state.draining.len())
            .field("config", &self.shared.config)
            .finish()
    }
}

impl<S: Send + 'static> ReplicaSet<S> {
    /// A replica set whose replicas come from `factory`: each call returns a
    /// future that initialises one replica (load a model, warm up...). The
    /// replica counts as ready after that future resolves *and* the service's
    /// `poll_ready` returns ready. The set starts empty.
    pub fn new<Req, F, Fut, E>(config: ReplicaSetConfig, factory: F) -> Result<Self, ConfigError>
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<S, E>> + Send + 'static,
        E: Into<BoxError>,
        S: Service<Req>,
        S::Error: Into<BoxError>,
        Req: 'static,
    {
        config.validate()?;
        let factory: Factory<S> = Arc::new(move || {
            let fut = factory();
            Box::pin(async move {
                let mut svc = fut.await.map_err(Into::into)?;
                ServiceExt::<Req>::ready(&mut svc)
                    .await
                    .map_err(Into::into)?;
                Ok(svc)
            })
        });
        Ok(Self {
            shared: Arc::new(Shared {
                factory,
                state: Mutex::new(State {
                    next_id: 0,
                    starting: Vec::new(),
                    ready: Vec::new(),
                    removals: VecDeque::new(),
                    draining: Vec::new(),
                    waker: None,
                    failed_starts: 0,
                }),
                counters: Arc::new(SetCounters::default()),
                config,
            }),
        })
    }

    /// The discovery stream for a balancer. Meant for one consumer: each ready
    /// replica is inserted into exactly one stream.
    pub fn discover(&self) -> ReplicaDiscover<S> {
        ReplicaDiscover::new(Arc::clone(&self.shared))
    }

    /// Replicas removed whose in-flight requests have not finished yet.
    pub fn draining(&self) -> usize {
        let mut state = self.shared.state.lock();
        state
            .draining
            .retain(|l| l.in_flight.load(Ordering::Acquire) > 0);
        state.draining.len()
    }

    /// Replica starts that failed (factory or readiness error) so far.
    pub fn failed_starts(&self) -> u64 {
        self.shared.state.lock().failed_starts
    }

    /// The ids of the ready replicas.
    pub fn ready_ids(&self) -> Vec<ReplicaId> {
        self.shared
            .state
            .lock()
            .ready
            .iter()
            .map(|r| r.id)
            .collect()
    }

    fn start_one(&self, state: &mut State<S>) {
        let id = ReplicaId(state.next_id);
        state.next_id += 1;
        let shared = Arc::clone(&self.shared);
        let init = (self.shared.factory)();
        let task = tokio::spawn(async move {
            let result = init.await;
            let mut state = shared.state.lock();
            // Aborted between completion and here: it is no longer wanted.
            let Some(pos) = state.starting.iter().position(|(sid, _)| *sid == id) else {
                return;
            };
            state.starting.swap_remove(pos);
            match result {
                Ok(service) => {
                    state.ready.push(ReadyReplica {
                        id,
                        service: Some(service),
                        load: Arc::new(ReplicaLoad::default()),
                    });
                    state.wake();
                }
                Err(error) => {
                    state.failed_starts += 1;
                    tracing::warn!(replica = %id, %error, "replica failed to start");
                }
            }
        });
        state.starting.push((id, task.abort_handle()));
    }

    fn stop_one(&self, state: &mut State<S>) {
        // Starting replicas are not capacity yet: stop the newest of them first.
        if let Some((_, handle)) = state.starting.pop() {
            handle.abort();
            return;
        }
        // Then ready replicas nobody serves from yet.
        if let Some(pos) = state.ready.iter().rposition(|r| r.service.is_some()) {
            state.ready.remove(pos);
            return;
        }
        // Then the least loaded announced replica, removed gracefully.
        let pos = state
            .ready
            .iter()
            .enumerate()
            .min_by_key(|(_, r)| {
                (
                    r.load.in_flight.load(Ordering::Acquire),
                    std::cmp::Reverse(r.id),
                )
            })
            .map(|(i, _)| i);
        if let Some(pos) = pos {
            let replica = state.ready.remove(pos);
            state.removals.push_back(replica.id);
            state.draining.push(replica.load);
            state.wake();
        }
    }

    fn apply(&self, n: u32) -> Result<(), BoxError> {
        let max = self.shared.config.max_replicas;
        if n > max {
            return Err(ReplicaLimit { requested: n, max }.into());
        }
        let mut state = self.shared.state.lock();
        state
            .draining
            .retain(|l| l.in_flight.load(Ordering::Acquire) > 0);
        let live = state.starting.len() + state.ready.len();
        let n = n as usize;
        for _ in live..n {
            self.start_one(&mut state);
        }
        for _ in n..live {
            self.stop_one(&mut state);
        }
        Ok(())
    }
}

impl<S: Send + 'static> Scaler for ReplicaSet<S> {
    fn replicas(&self) -> ReplicaCounts {
        let state = self.shared.state.lock();
        let ready = state.ready.len() as u32;
        ReplicaCounts::new(state.starting.len() as u32 + ready, ready)
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        // Spawning needs the runtime, which the returned future runs on.
        Box::pin(async move { self.apply(n) })
    }
}

impl<S: Send + 'static> SignalSource for ReplicaSet<S> {
    fn sample(&mut self, _now: Duration) -> Option<LoadSample> {
        let state = self.shared.state.lock();
        let in_flight: usize = state
            .ready
            .iter()
            .map(|r| r.load.in_flight.load(Ordering::Acquire))
            .sum();
        let counters = &self.shared.counters;
        Some(LoadSample {
            ongoing: in_flight as f64,
            running: in_flight as f64,
            arrivals: counters.arrivals.swap(0, Ordering::AcqRel),
            completions: counters.completions.swap(0, Ordering::AcqRel),
            replicas_reporting: Some(state.ready.len() as u32),
            ..LoadSample::default()
        })
    }
}

/// Builds the [`Replica`] handed to the balancer for a ready replica.
pub(crate) fn replica_for<S>(
    shared: &Shared<S>,
    id: ReplicaId,
    service: S,
    load: Arc<ReplicaLoad>,
) -> Replica<S> {
    Replica::new(id, service, load, Arc::clone(&shared.counters))
}
