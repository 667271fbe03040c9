use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::{Mutex, RwLock};
use tower::{Service, ServiceExt};

use super::config::{PickStrategy, SplitConfig, StickyStrategy, WhenNotReady};
use super::future::ResponseFuture;
use super::handle::SplitHandle;
use super::instances::Instances;
use super::overrides::{HeaderOverride, Override, PredicateOverride};
use super::table::{Entry, Table};
use crate::error::ConfigError;
use crate::hash::{key_hash, StickyKey};
use crate::stats::BackendStats;

/// Name of the counter of overrides naming an unknown backend (label `split`).
pub const UNKNOWN_OVERRIDE_TOTAL: &str = "convoy_router_unknown_override_total";

type KeyFn<Req> = Box<dyn Fn(&Req) -> Option<u64> + Send + Sync>;

/// State shared by every clone of a split and by its handles.
pub(crate) struct Control<S> {
    pub(crate) name: Arc<str>,
    pub(crate) config: SplitConfig,
    pub(crate) sticky: Option<StickyStrategy>,
    pub(crate) table: RwLock<Arc<Table<S>>>,
    pub(crate) epoch: AtomicU64,
    /// Serialises updates (readers never take it).
    pub(crate) writer: Mutex<()>,
    pub(crate) next_id: AtomicU64,
    pub(crate) unknown_override: metrics::Counter,
}

impl<S> Control<S> {
    pub(crate) fn current(&self) -> Arc<Table<S>> {
        self.table.read().clone()
    }

    pub(crate) fn new_entry(&self, name: &str, service: S, weight: f64) -> Entry<S> {
        new_entry(&self.name, &self.next_id, name, service, weight)
    }

    /// Installs a new table for everyone at once.
    pub(crate) fn install(&self, table: Table<S>) {
        for e in &table.entries {
            e.stats.set_weight(e.weight);
        }
        let epoch = table.epoch;
        *self.table.write() = Arc::new(table);
        self.epoch.store(epoch, Ordering::Release);
    }
}

fn new_entry<S>(
    split: &Arc<str>,
    next_id: &AtomicU64,
    name: &str,
    service: S,
    weight: f64,
) -> Entry<S> {
    let name: Arc<str> = name.into();
    Entry {
        id: next_id.fetch_add(1, Ordering::Relaxed),
        stats: Arc::new(BackendStats::new(split, &name)),
        name,
        weight,
        service: Mutex::new(service),
    }
}

/// Everything a clone shares, behind one `Arc` (one reference count per clone).
struct Shared<S, Req> {
    control: Arc<Control<S>>,
    routing: Routing<Req>,
}

/// Request-dependent routing: sticky key and overrides.
struct Routing<Req> {
    key: Option<KeyFn<Req>>,
    overrides: Vec<Box<dyn Override<Req>>>,
}

/// A weighted split of requests over named backends.
///
/// See the [module documentation](crate::split) for the algorithm, readiness
/// rules and how clones share state.
pub struct Split<S, Req> {
    shared: Arc<Shared<S, Req>>,
    table: Arc<Table<S>>,
    /// This clone's own backend instances, cloned lazily from the prototypes.
    services: Instances<S>,
    /// Backend made ready by `poll_ready`, consumed by `call`.
    ready: Option<usize>,
    /// Backend picked by `poll_ready` that was not ready yet.
    pending: Option<usize>,
}

impl<S, Req> fmt::Debug for Split<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Split")
            .field("name", &self.shared.control.name)
            .field("table", &self.table)
            .field("ready", &self.ready)
            .finish_non_exhaustive()
    }
}

impl<S: Clone, Req> Clone for Split<S, Req> {
    /// The clone shares weights, round-robin position and statistics, but
    /// gets fresh backend instances: readiness is never copied.
    fn clone(&self) -> Self {
        // A newer table, if any, is picked up by the clone's first `poll_ready`.
        let table = self.table.clone();
        Self {
            shared: self.shared.clone(),
            services: Instances::default(),
            table,
            ready: None,
            pending: None,
        }
    }
}

impl<S: Clone, Req> Split<S, Req> {
    /// Starts building a split.
    pub fn builder() -> SplitBuilder<S, Req> {
        SplitBuilder {
            config: SplitConfig::default(),
            backends: Vec::new(),
            key: None,
            overrides: Vec::new(),
        }
    }

    /// A handle to change weights and backends of this split (and all its clones).
    pub fn handle(&self) -> SplitHandle<S> {
        SplitHandle::new(self.shared.control.clone())
    }

    /// Picks up a table installed by a handle. Keeps backend instances
    /// whose entry survived, so their readiness is not lost.
    fn sync(&mut self) {
        if self.shared.control.epoch.load(Ordering::Acquire) == self.table.epoch {
            return;
        }
        let table = self.shared.control.current();
        self.services.resync(&table);
        self.table = table;
        self.ready = None;
        self.pending = None;
    }

    fn service(&mut self, idx: usize) -> &mut S {
        self.services.get(idx, &self.table.entries[idx])
    }
}

impl<S, Req> Split<S, Req>
where
    S: Service<Req> + Clone,
{
    fn poll_backend(&mut self, idx: usize, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.service(idx).poll_ready(cx)
    }

    fn target(&self, req: &Req) -> Option<(usize, Option<u64>, bool)> {
        for o in &self.shared.routing.overrides {
            if let Some(name) = o.backend(req) {
                match self.table.index_of(name) {
                    Some(i) => return Some((i, None, true)),
                    None => self.shared.control.unknown_override.increment(1),
                }
            }
        }
        let key = self.shared.routing.key.as_ref()?;
        Some(match key(req) {
            Some(h) => (
                self.table.sticky(h, self.shared.control.config.pick),
                Some(h),
                false,
            ),
            None => (
                self.table.pick(self.shared.control.config.pick),
                None,
                false,
            ),
        })
    }
}

impl<S, Req> Service<Req> for Split<S, Req>
where
    S: Service<Req> + Clone,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = ResponseFuture<S, Req>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.ready.is_some() {
            return Poll::Ready(Ok(()));
        }
        self.sync();
        if self.shared.routing.key.is_some() {
            // The pick depends on the request: it is made in `call`, and the
            // response future drives only the picked backend's readiness.
            return Poll::Ready(Ok(()));
        }
        let first = match self.pending {
            Some(i) => i,
            None => {
                let i = self.table.pick(self.shared.control.config.pick);
                self.pending = Some(i);
                i
            }
        };
        match self.poll_backend(first, cx) {
            Poll::Ready(Ok(())) => {
                self.pending = None;
                self.ready = Some(first);
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(e)) => {
                self.pending = None;
                return Poll::Ready(Err(e));
            }
            Poll::Pending => {}
        }
        if self.shared.control.config.when_not_ready == WhenNotReady::Spill {
            let order = self.table.spill_order.clone();
            for &j in order.iter().filter(|j| **j as usize != first) {
                match self.poll_backend(j as usize, cx) {
                    Poll::Ready(Ok(())) => {
                        self.table.entries[first].stats.on_spill();
                        self.pending = None;
                        self.ready = Some(j as usize);
                        return Poll::Ready(Ok(()));
                    }
                    Poll::Ready(Err(e)) => {
                        self.pending = None;
                        return Poll::Ready(Err(e));
                    }
                    Poll::Pending => {}
                }
            }
        }
        Poll::Pending
    }

    fn call(&mut self, req: Req) -> Self::Future {
        let (idx, key, forced) = match self.target(&req) {
            Some(t) => t,
            None => (
                self.ready.expect("poll_ready must be called first"),
                None,
                false,
            ),
        };
        let stats = self.table.entries[idx].stats.clone();
        if let Some(h) = key {
            stats.on_key(h);
        }
        if forced {
            stats.on_override();
        }
        if self.ready == Some(idx) {
            self.ready = None;
            let fut = self.service(idx).call(req);
            ResponseFuture::called(fut, stats, self.shared.control.config.record_latency)
        } else {
            // Overrides and sticky keys may name a backend this clone has not
            // made ready: drive that backend alone. A reservation held for
            // another backend stays for the next call.
            let svc = self.service(idx).clone();
            ResponseFuture::oneshot(
                svc.oneshot(req),
                stats,
                self.shared.control.config.record_latency,
            )
        }
    }
}

/// Builds a [`Split`] and its [`SplitHandle`].
pub struct SplitBuilder<S, Req> {
    config: SplitConfig,
    backends: Vec<(String, S, f64)>,
    key: Option<KeyFn<Req>>,
    overrides: Vec<Box<dyn Override<Req>>>,
}

impl<S, Req> fmt::Debug for SplitBuilder<S, Req> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SplitBuilder")
            .field("config", &self.config)
            .field(
                "backends",
                &self
                    .backends
                    .iter()
                    .map(|(n, _, w)| (n, w))
                    .collect::<Vec<_>>(),
            )
            .field("sticky", &self.key.is_some())
            .field("overrides", &self.overrides.len())
            .finish()
    }
}

impl<S: Clone, Req> SplitBuilder<S, Req> {
    /// Replaces the whole configuration.
    pub fn config(mut self, config: SplitConfig) -> Self {
        self.config = config;
        self
    }

    /// Name used as the `split` metric label.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.config.name = name.into();
        self
    }

    /// Pick strategy for requests without a key or override.
    pub fn pick(mut self, pick: PickStrategy) -> Self {
        self.config.pick = pick;
        self
    }

    /// Wait for the picked backend, or spill to another one.
    pub fn when_not_ready(mut self, when: WhenNotReady) -> Self {
        self.config.when_not_ready = when;
        self
    }

    /// Whether completions are timed for the latency histogram (default
    /// true; two clock reads per request). Without it, rollouts can check
    /// error rates but not latency.
    pub fn record_latency(mut self, on: bool) -> Self {
        self.config.record_latency = on;
        self
    }

    /// Sticky mapping used with [`sticky_by`](Self::sticky_by).
    pub fn sticky_strategy(mut self, strategy: StickyStrategy) -> Self {
        self.config.sticky = strategy;
        self
    }

    /// Adds a backend. `weight` must be finite and ≥ 0 (checked by [`build`](Self::build)).
    pub fn backend(mut self, name: impl Into<String>, service: S, weight: f64) -> Self {
        self.backends.push((name.into(), service, weight));
        self
    }

    /// Makes the split sticky: requests with the same key go to the same
    /// backend. Requests for which `key` returns `None` are split by weight.
    ///
    /// Keys are hashed from their canonical bytes (see [`StickyKey`]), so a
    /// key keeps its backend across rebuilds and platforms.
    pub fn sticky_by<K, F>(mut self, key: F) -> Self
    where
        K: StickyKey,
        F: Fn(&Req) -> Option<K> + Send + Sync + 'static,
    {
        self.key = Some(Box::new(move |req| key(req).map(|k| key_hash(&k))));
        self
    }

    /// Adds an override; overrides are tried in the order added and win over
    /// weights and sticky keys.
    pub fn override_with(mut self, o: impl Override<Req> + 'static) -> Self {
        self.overrides.push(Box::new(o));
        self
    }

    /// Sends requests matching `predicate` to `backend`.
    pub fn override_when<F>(self, predicate: F, backend: impl Into<String>) -> Self
    where
        F: Fn(&Req) -> bool + Send + Sync + 'static,
    {
        self.override_with(PredicateOverride::new(predicate, backend))
    }

    /// Validates the configuration and builds the split.
    pub fn build(self) -> Result<(Split<S, Req>, SplitHandle<S>), ConfigError> {
        let sticky = self.key.as_ref().map(|_| self.config.sticky);
        let name: Arc<str> = self.config.name.as_str().into();
        let next_id = AtomicU64::new(0);
        let entries = self
            .backends
            .into_iter()
            .map(|(backend, svc, w)| new_entry(&name, &next_id, &backend, svc, w))
            .collect();
        let table = Table::build(1, entries, sticky)?;
        for e in &table.entries {
            e.stats.set_weight(e.weight);
        }
        let control = Control {
            unknown_override: metrics::counter!(UNKNOWN_OVERRIDE_TOTAL, "split" => self.config.name.clone()),
            name,
            config: self.config,
            sticky,
            table: RwLock::new(Arc::new(table)),
            epoch: AtomicU64::new(1),
            writer: Mutex::new(()),
            next_id,
        };
        let control = Arc::new(control);
        let table = control.current();
        let split = Split {
            shared: Arc::new(Shared {
                control: control.clone(),
                routing: Routing {
                    key: self.key,
                    overrides: self.overrides,
                },
            }),
            services: Instances::default(),
            table,
            ready: None,
            pending: None,
        };
        Ok((split, SplitHandle::new(control)))
    }
}

impl<S: Clone, B> SplitBuilder<S, http::Request<B>> {
    /// Lets a header force the backend, e.g. `x-convoy-version: v2`.
    pub fn override_header(self, name: http::HeaderName) -> Self {
        self.override_with(HeaderOverride::new(name))
    }

    /// Makes the split sticky by the value of header `name`.
    pub fn sticky_header(self, name: http::HeaderName) -> Self {
        let mut this = self;
        this.key = Some(Box::new(move |req: &http::Request<B>| {
            req.headers().get(&name).map(key_hash)
        }));
        this
    }
}
