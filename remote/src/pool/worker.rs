//! The pool's worker: follows the source, the failure reports and the
//! probes, and keeps every version's balancers in step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use futures::stream::FuturesUnordered;
use futures::StreamExt;
use parking_lot::Mutex;
use tokio::sync::mpsc;
use tower::discover::Change as DiscoverChange;

use super::tracked::{Report, Tracked};
use super::{Command, EndpointStatus, PoolConfig, Probe};
use crate::connect::Connect;
use crate::endpoint::{Change, Endpoint};
use crate::source::ChangeStream;

type Subscriber<S> = mpsc::UnboundedSender<DiscoverChange<String, Tracked<S>>>;

#[derive(Debug)]
struct Entry {
    endpoint: Endpoint,
    ejected: bool,
    /// In its version's balancers.
    serving: bool,
    /// Bumped at every insertion, so that late reports about a service
    /// that was replaced are ignored.
    generation: u64,
}

impl Entry {
    fn should_serve(&self) -> bool {
        self.endpoint.is_ready() && !self.ejected
    }
}

pub(super) struct Worker<C: Connect, P> {
    connector: C,
    probe: Arc<P>,
    config: PoolConfig,
    entries: BTreeMap<String, Entry>,
    subscribers: HashMap<String, Vec<Subscriber<C::Service>>>,
    status: Arc<Mutex<BTreeMap<String, EndpointStatus>>>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    next_generation: u64,
}

impl<C: Connect, P: Probe> Worker<C, P> {
    pub(super) fn new(
        connector: C,
        probe: P,
        config: PoolConfig,
        status: Arc<Mutex<BTreeMap<String, EndpointStatus>>>,
    ) -> Self {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        Self {
            connector,
            probe: Arc::new(probe),
            config,
            entries: BTreeMap::new(),
            subscribers: HashMap::new(),
            status,
            reports_tx,
            reports_rx,
            next_generation: 0,
        }
    }

    pub(super) async fn run(
        mut self,
        mut changes: ChangeStream,
        mut cmds: mpsc::UnboundedReceiver<Command<C::Service>>,
    ) {
        let mut probe_tick = tokio::time::interval(self.config.probe_interval);
        probe_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut probes = FuturesUnordered::new();
        let mut probing: HashSet<String> = HashSet::new();
        let mut source_open = true;
        let mut cmds_open = true;
        loop {
            tokio::select! {
                change = changes.next(), if source_open => match change {
                    Some(Ok(change)) => self.apply(change),
                    Some(Err(e)) => tracing::warn!(error = %e, "remote pool: endpoint source"),
                    // A finished source leaves its endpoints in place.
                    None => source_open = false,
                },
                cmd = cmds.recv(), if cmds_open => match cmd {
                    Some(Command::Subscribe { version, tx }) => self.subscribe(version, tx),
                    None => cmds_open = false,
                },
                Some(report) = self.reports_rx.recv() => self.on_failures(report),
                _ = probe_tick.tick() => {
                    self.prune_subscribers();
                    if !cmds_open && self.subscribers.is_empty() {
                        return;
                    }
                    for entry in self.entries.values() {
                        if !entry.endpoint.is_ready() || !probing.insert(entry.endpoint.id.clone()) {
                            continue;
                        }
                        let probe = self.probe.probe(&entry.endpoint);
                        let id = entry.endpoint.id.clone();
                        let timeout = self.config.probe_timeout;
                        probes.push(async move {
                            let ok = tokio::time::timeout(timeout, probe).await.unwrap_or(false);
                            (id, ok)
                        });
                    }
                }
                Some((id, ok)) = probes.next(), if !probes.is_empty() => {
                    probing.remove(&id);
                    self.on_probe(&id, ok);
                }
            }
        }
    }

    fn apply(&mut self, change: Change) {
        match change {
            Change::Insert(endpoint) | Change::Update(endpoint) => self.upsert(endpoint),
            Change::Remove(id) => {
                if let Some(entry) = self.entries.remove(&id) {
                    self.leave(&entry);
                    self.status.lock().remove(&id);
                }
            }
        }
    }

    fn upsert(&mut self, endpoint: Endpoint) {
        let id = endpoint.id.clone();
        if let Some(mut old) = self.entries.remove(&id) {
            let moved =
                old.endpoint.addr != endpoint.addr || old.endpoint.version != endpoint.version;
            if old.serving && (moved || !endpoint.is_ready()) {
                self.leave(&old);
                old.serving = false;
            }
            if moved {
                // A new address is a new replica: no ejection carries over.
                old.ejected = false;
            }
            old.endpoint = endpoint;
            self.entries.insert(id.clone(), old);
        } else {
            self.entries.insert(
                id.clone(),
                Entry {
                    endpoint,
                    ejected: false,
                    serving: false,
                    generation: 0,
                },
            );
        }
        self.reconcile(&id);
    }

    /// Inserts the endpoint into its balancers when it should serve and
    /// does not.
    fn reconcile(&mut self, id: &str) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        if entry.should_serve() && !entry.serving {
            self.next_generation += 1;
            entry.generation = self.next_generation;
            entry.serving = true;
            let entry = &self.entries[id];
            if let Some(subs) = self.subscribers.get(&entry.endpoint.version) {
                for tx in subs {
                    let _ = tx.send(DiscoverChange::Insert(id.to_string(), self.service(entry)));
                }
            }
        }
        self.publish(id);
    }

    fn service(&self, entry: &Entry) -> Tracked<C::Service> {
        Tracked::new(
            self.connector.connect(&entry.endpoint),
            entry.endpoint.id.clone(),
            entry.generation,
            self.config.eject_after,
            self.reports_tx.clone(),
        )
    }

    /// Removes the endpoint from its version's balancers.
    fn leave(&self, entry: &Entry) {
        if !entry.serving {
            return;
        }
        if let Some(subs) = self.subscribers.get(&entry.endpoint.version) {
            for tx in subs {
                let _ = tx.send(DiscoverChange::Remove(entry.endpoint.id.clone()));
            }
        }
    }

    fn eject(&mut self, id: &str, why: &str) {
        let Some(entry) = self.entries.get(id) else {
            return;
        };
        if entry.ejected {
            return;
        }
        tracing::warn!(endpoint = %entry.endpoint, why, "remote pool: ejecting");
        self.leave(entry);
        let entry = self.entries.get_mut(id).expect("present");
        entry.ejected = true;
        entry.serving = false;
        self.publish(id);
    }

    fn on_failures(&mut self, report: Report) {
        let current = self
            .entries
            .get(&report.id)
            .is_some_and(|e| e.serving && e.generation == report.generation);
        if current {
            self.eject(&report.id, "consecutive failures");
        }
    }

    fn on_probe(&mut self, id: &str, ok: bool) {
        let Some(entry) = self.entries.get_mut(id) else {
            return;
        };
        match (ok, entry.ejected) {
            (false, false) if entry.endpoint.is_ready() => self.eject(id, "failed health probe"),
            (true, true) => {
                tracing::info!(endpoint = %entry.endpoint, "remote pool: probe passed, back in");
                entry.ejected = false;
                self.reconcile(id);
            }
            _ => {}
        }
    }

    fn subscribe(&mut self, version: String, tx: Subscriber<C::Service>) {
        for entry in self.entries.values() {
            if entry.serving && entry.endpoint.version == version {
                let _ = tx.send(DiscoverChange::Insert(
                    entry.endpoint.id.clone(),
                    self.service(entry),
                ));
            }
        }
        self.subscribers.entry(version).or_default().push(tx);
    }

    fn prune_subscribers(&mut self) {
        self.subscribers.retain(|_, subs| {
            subs.retain(|tx| !tx.is_closed());
            !subs.is_empty()
        });
    }

    fn publish(&self, id: &str) {
        if let Some(e) = self.entries.get(id) {
            self.status.lock().insert(
                id.to_string(),
                EndpointStatus {
                    endpoint: e.endpoint.clone(),
                    ejected: e.ejected,
                    serving: e.serving,
                },
            );
        }
    }
}
