//! [`EndpointSliceSource`]: convoy-remote's [`EndpointSource`] over the
//! EndpointSlices of one Service (`discovery.k8s.io/v1`, list and watch).

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use convoy_remote::{
    Change, ChangeStream, Endpoint, EndpointSource, EndpointState, EndpointTable, SourceError,
};
use futures::stream::{self, BoxStream, StreamExt};
use k8s_openapi::api::discovery::v1::{Endpoint as SliceEndpoint, EndpointSlice};
use kube::api::{ListParams, WatchEvent, WatchParams};
use kube::{Api, Client};
use tokio::time::Duration;

use crate::error::{check_name, Error, ErrorKind};
use crate::health::{ApiHealth, HealthCell};

/// The label the EndpointSlice controller puts on a Service's slices.
pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";

/// Maps one EndpointSlice to endpoints:
///
/// | conditions | endpoint |
/// | --- | --- |
/// | not terminating, `ready` and `serving` (nil = true) | `Ready` |
/// | `terminating` and `serving` | `Draining` (in-flight requests finish) |
/// | `terminating` and not `serving` | absent (removed) |
/// | not terminating, not `ready` or not `serving` | absent |
///
/// The port is the one named `port_name`, or the slice's first; the id is
/// the pod's name (`targetRef`), else `ip:port`; an endpoint whose first
/// address is not an IP (an FQDN slice) is skipped.
pub fn slice_endpoints(
    slice: &EndpointSlice,
    port_name: Option<&str>,
    version: &str,
) -> Vec<Endpoint> {
    let Some(port) = slice
        .ports
        .iter()
        .flatten()
        .find(|p| port_name.is_none_or(|name| p.name.as_deref() == Some(name)))
        .and_then(|p| p.port)
        .and_then(|p| u16::try_from(p).ok())
    else {
        return Vec::new();
    };
    slice
        .endpoints
        .iter()
        .filter_map(|e| slice_endpoint(e, port, version))
        .collect()
}

fn slice_endpoint(e: &SliceEndpoint, port: u16, version: &str) -> Option<Endpoint> {
    let c = e.conditions.clone().unwrap_or_default();
    let (ready, serving, terminating) = (
        c.ready.unwrap_or(true),
        c.serving.unwrap_or(true),
        c.terminating.unwrap_or(false),
    );
    let state = match (terminating, ready && serving, serving) {
        (false, true, _) => EndpointState::Ready,
        (true, _, true) => EndpointState::Draining,
        _ => return None,
    };
    let ip: IpAddr = e.addresses.first()?.parse().ok()?;
    let addr = SocketAddr::new(ip, port);
    let id = e
        .target_ref
        .as_ref()
        .and_then(|r| r.name.clone())
        .unwrap_or_else(|| addr.to_string());
    Some(Endpoint {
        id,
        addr,
        version: version.to_owned(),
        state,
    })
}

/// The endpoints of every slice, one per id: `Ready` wins over `Draining`
/// when two slices name the same id (an endpoint moving between slices).
fn merge(slices: &BTreeMap<String, Vec<Endpoint>>) -> Vec<Endpoint> {
    let mut by_id: BTreeMap<&str, &Endpoint> = BTreeMap::new();
    for e in slices.values().flatten() {
        by_id
            .entry(&e.id)
            .and_modify(|known| {
                if !known.is_ready() && e.is_ready() {
                    *known = e;
                }
            })
            .or_insert(e);
    }
    by_id.into_values().cloned().collect()
}

#[derive(Debug)]
struct Status {
    health: HealthCell,
    ready: AtomicU32,
    listed: AtomicBool,
    relists: AtomicU32,
}

/// What an [`EndpointSliceSource`] knows, readable while its stream runs.
#[derive(Debug, Clone)]
pub struct SliceSourceStatus(Arc<Status>);

impl SliceSourceStatus {
    /// Whether the API server answered the last list or watch.
    pub fn health(&self) -> ApiHealth {
        self.0.health.get()
    }

    /// Ready endpoints in the last snapshot (kept while the API server is
    /// unreachable); the ready count for [`KubeScaler`](crate::KubeScaler).
    pub fn ready(&self) -> u32 {
        self.0.ready.load(Ordering::Relaxed)
    }

    /// Whether a first list has succeeded.
    pub fn listed(&self) -> bool {
        self.0.listed.load(Ordering::Relaxed)
    }

    /// Lists made after the first (each a 410 Gone recovery).
    pub fn relists(&self) -> u32 {
        self.0.relists.load(Ordering::Relaxed)
    }
}

/// convoy-remote's [`EndpointSource`] over the EndpointSlices of one Service
/// (one Service per model version; the `version` is given here).
///
/// It lists the slices, then watches from the list's `resourceVersion` with
/// bookmarks (so a quiet watch still moves its `resourceVersion` on and a
/// reconnect rarely needs a re-list). A 410 Gone — from the watch request
/// or as an event — re-lists and yields only the differences. A watch
/// silent for longer than its server-side timeout plus 5 s (a dead
/// connection with no reset) is re-opened. Any other
/// failure is yielded as a [`SourceError`] and retried with exponential
/// backoff, keeping the endpoints already announced: a front goes on serving
/// its last snapshot while the API server is away.
pub struct EndpointSliceSource {
    api: Api<EndpointSlice>,
    service: String,
    port_name: Option<String>,
    version: String,
    watch_timeout: u32,
    backoff: (Duration, Duration),
    status: SliceSourceStatus,
}

impl fmt::Debug for EndpointSliceSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EndpointSliceSource")
            .field("service", &self.service)
            .field("port_name", &self.port_name)
            .field("version", &self.version)
            .field("watch_timeout", &self.watch_timeout)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl EndpointSliceSource {
    /// The endpoints of Service `service` in `namespace`, announced with
    /// `version`. Fails with [`ErrorKind::Config`] naming the field for a
    /// name that is not an object name or an empty version.
    pub fn new(
        client: Client,
        namespace: &str,
        service: &str,
        version: &str,
    ) -> Result<Self, Error> {
        check_name("namespace", namespace)?;
        check_name("service", service)?;
        if version.is_empty() {
            return Err(Error::config("version", "must not be empty"));
        }
        Ok(Self {
            api: Api::namespaced(client, namespace),
            service: service.to_owned(),
            port_name: None,
            version: version.to_owned(),
            watch_timeout: 290,
            backoff: (Duration::from_millis(200), Duration::from_secs(10)),
            status: SliceSourceStatus(Arc::new(Status {
                health: HealthCell::new("endpoint_slices", service),
                ready: AtomicU32::new(0),
                listed: AtomicBool::new(false),
                relists: AtomicU32::new(0),
            })),
        })
    }

    /// Uses the slice port named `name` (default: the first port).
    pub fn port_name(mut self, name: &str) -> Self {
        self.port_name = Some(name.to_owned());
        self
    }

    /// The server-side timeout of each watch request, in seconds (default
    /// 290, kube's); the watch is re-opened from the last
    /// `resourceVersion` when it ends. Fails when zero.
    pub fn watch_timeout(mut self, seconds: u32) -> Result<Self, Error> {
        if seconds == 0 {
            return Err(Error::config("watch_timeout", "must be greater than zero"));
        }
        self.watch_timeout = seconds;
        Ok(self)
    }

    /// Retry delays after a failure: `initial`, doubling up to `max`
    /// (default 200 ms to 10 s). Fails when `initial` is zero or above `max`.
    pub fn backoff(mut self, initial: Duration, max: Duration) -> Result<Self, Error> {
        if initial.is_zero() || initial > max {
            return Err(Error::config("backoff", "initial must be > 0 and <= max"));
        }
        self.backoff = (initial, max);
        Ok(self)
    }

    /// The view of what it knows, for health checks and the scaler.
    pub fn status(&self) -> SliceSourceStatus {
        self.status.clone()
    }
}

type Events = BoxStream<'static, kube::Result<WatchEvent<EndpointSlice>>>;

enum Next {
    List,
    Watch,
    Read(Events),
}

struct Worker {
    source: EndpointSliceSource,
    slices: BTreeMap<String, Vec<Endpoint>>,
    table: EndpointTable,
    resource_version: String,
    next: Option<Next>,
    delay: Duration,
    /// A backoff to wait before the next call.
    wait: Option<Duration>,
}

impl Worker {
    fn error(&mut self, error: Error) -> Vec<Result<Change, SourceError>> {
        if error.kind() == ErrorKind::Unreachable {
            self.source.status.0.health.failure(&error);
        }
        tracing::warn!(service = %self.source.service, %error, "EndpointSlice source: keeping the last endpoints");
        vec![Err(SourceError::new("kubernetes", error))]
    }

    /// Waits the backoff before the next call (the error was yielded first).
    fn back_off(&mut self) {
        self.wait = Some(self.delay);
        self.delay = (self.delay * 2).min(self.source.backoff.1);
    }

    fn publish(&mut self) -> Vec<Result<Change, SourceError>> {
        let merged = merge(&self.slices);
        let ready = merged.iter().filter(|e| e.is_ready()).count();
        let service = &self.source.service;
        metrics::gauge!("convoy_kube_endpoints", "service" => service.clone(), "state" => "ready")
            .set(ready as f64);
        metrics::gauge!("convoy_kube_endpoints", "service" => service.clone(), "state" => "draining")
            .set((merged.len() - ready) as f64);
        self.source
            .status
            .0
            .ready
            .store(u32::try_from(ready).unwrap_or(u32::MAX), Ordering::Relaxed);
        self.table.replace(merged).into_iter().map(Ok).collect()
    }

    fn ok(&mut self) {
        self.source.status.0.health.success();
        self.delay = self.source.backoff.0;
    }

    fn upsert(&mut self, slice: &EndpointSlice) {
        if let Some(rv) = &slice.metadata.resource_version {
            self.resource_version.clone_from(rv);
        }
        let name = slice.metadata.name.clone().unwrap_or_default();
        let eps = slice_endpoints(
            slice,
            self.source.port_name.as_deref(),
            &self.source.version,
        );
        self.slices.insert(name, eps);
    }

    /// One step: the changes it produced (maybe none).
    async fn step(&mut self) -> Vec<Result<Change, SourceError>> {
        if let Some(wait) = self.wait.take() {
            tokio::time::sleep(wait).await;
        }
        let selector = format!("{SERVICE_NAME_LABEL}={}", self.source.service);
        match self.next.take().unwrap_or(Next::List) {
            Next::List => {
                match self
                    .source
                    .api
                    .list(&ListParams::default().labels(&selector))
                    .await
                {
                    Ok(list) => {
                        self.ok();
                        let status = &self.source.status.0;
                        if status.listed.swap(true, Ordering::Relaxed) {
                            status.relists.fetch_add(1, Ordering::Relaxed);
                            metrics::counter!("convoy_kube_relists_total", "service" => self.source.service.clone())
                                .increment(1);
                        }
                        self.slices.clear();
                        for slice in &list.items {
                            self.upsert(slice);
                        }
                        self.resource_version = list.metadata.resource_version.unwrap_or_default();
                        self.next = Some(Next::Watch);
                        self.publish()
                    }
                    Err(e) => {
                        let out = self.error(Error::from_kube("list endpointslices", e));
                        self.back_off();
                        self.next = Some(Next::List);
                        out
                    }
                }
            }
            Next::Watch => {
                let wp = WatchParams::default()
                    .labels(&selector)
                    .timeout(self.source.watch_timeout);
                match self.source.api.watch(&wp, &self.resource_version).await {
                    Ok(events) => {
                        self.ok();
                        self.next = Some(Next::Read(events.boxed()));
                        Vec::new()
                    }
                    Err(e) => {
                        self.watch_failed(Error::from_kube("watch endpointslices", e))
                            .await
                    }
                }
            }
            Next::Read(mut events) => match tokio::time::timeout(self.silence(), events.next())
                .await
            {
                // Nothing, not even the server's close, long after its own
                // timeout: the connection is dead without a reset (a
                // partition). Re-open it, keeping the endpoints meanwhile.
                Err(_) => {
                    let error = Error::new(
                        ErrorKind::Unreachable,
                        format!("watch silent for {:?}", self.silence()),
                    );
                    self.watch_failed(error).await
                }
                Ok(None) => {
                    // The server closed the watch (its timeout): re-open it.
                    self.next = Some(Next::Watch);
                    Vec::new()
                }
                Ok(Some(Ok(event))) => {
                    let out = match event {
                        WatchEvent::Added(slice) | WatchEvent::Modified(slice) => {
                            self.upsert(&slice);
                            self.publish()
                        }
                        WatchEvent::Deleted(slice) => {
                            if let Some(rv) = &slice.metadata.resource_version {
                                self.resource_version.clone_from(rv);
                            }
                            self.slices
                                .remove(slice.metadata.name.as_deref().unwrap_or_default());
                            self.publish()
                        }
                        WatchEvent::Bookmark(bookmark) => {
                            self.resource_version = bookmark.metadata.resource_version;
                            Vec::new()
                        }
                        WatchEvent::Error(status) => {
                            let error = Error::from_kube("watch event", kube::Error::Api(status));
                            return self.watch_failed(error).await;
                        }
                    };
                    self.next = Some(Next::Read(events));
                    out
                }
                Ok(Some(Err(e))) => self.watch_failed(Error::from_kube("read watch", e)).await,
            },
        }
    }

    /// How long a watch may stay silent: the server's timeout plus 5 s
    /// (kube-runtime's window).
    fn silence(&self) -> Duration {
        Duration::from_secs(u64::from(self.source.watch_timeout) + 5)
    }

    async fn watch_failed(&mut self, error: Error) -> Vec<Result<Change, SourceError>> {
        if error.kind() == ErrorKind::Gone {
            // Our resourceVersion is compacted away: re-list (the server
            // answered, so no backoff), then diff against what we announced.
            tracing::info!(service = %self.source.service, %error, "EndpointSlice watch expired, re-listing");
            self.next = Some(Next::List);
            return Vec::new();
        }
        let out = self.error(error);
        self.back_off();
        self.next = Some(Next::Watch);
        out
    }
}

impl EndpointSource for EndpointSliceSource {
    fn changes(self) -> ChangeStream {
        let delay = self.backoff.0;
        let worker = Worker {
            source: self,
            slices: BTreeMap::new(),
            table: EndpointTable::new(),
            resource_version: String::new(),
            next: Some(Next::List),
            delay,
            wait: None,
        };
        stream::unfold(worker, |mut worker| async move {
            let out = worker.step().await;
            Some((stream::iter(out), worker))
        })
        .flatten()
        .boxed()
    }
}
