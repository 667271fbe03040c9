//! What a source announces: [`Endpoint`]s and [`Change`]s to the set of them,
//! and [`EndpointTable`], which turns full snapshots into changes.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// Whether an endpoint takes new requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EndpointState {
    /// Serving: new requests may be sent to it.
    Ready,
    /// Shutting down: no new requests, the ones in flight finish.
    Draining,
}

/// One replica on another machine, as a source announces it.
///
/// `id` is stable for the life of the replica (a pod name, an etcd key's
/// last segment, `host:port`); two endpoints with the same `id` are the same
/// replica, whatever their other fields.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// Stable identity of the replica.
    pub id: String,
    /// Where it listens.
    pub addr: SocketAddr,
    /// The model version it serves; a front keeps one balancer per version,
    /// so convoy-router's `Split` and `Rollout` pick between versions exactly
    /// as they do in one process.
    pub version: String,
    /// Whether it takes new requests.
    pub state: EndpointState,
}

impl Endpoint {
    /// A ready endpoint.
    pub fn ready(id: impl Into<String>, addr: SocketAddr, version: impl Into<String>) -> Self {
        Self {
            id: id.into(),
            addr,
            version: version.into(),
            state: EndpointState::Ready,
        }
    }

    /// The same endpoint, draining.
    pub fn draining(mut self) -> Self {
        self.state = EndpointState::Draining;
        self
    }

    /// `true` when it takes new requests.
    pub fn is_ready(&self) -> bool {
        self.state == EndpointState::Ready
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} at {} (version {:?}, {:?})",
            self.id, self.addr, self.version, self.state
        )
    }
}

/// A change to the set of endpoints, as yielded by an
/// [`EndpointSource`](crate::EndpointSource).
///
/// The model is tower's `discover::Change` with one more case: `Update`
/// carries a new state, address or version for an id already inserted.
/// Consumers treat an `Insert` of a known id as an `Update`, and a `Remove`
/// of an unknown id as nothing, so a source that re-lists after losing its
/// watch may repeat itself without harm.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Change {
    /// A replica not announced before.
    Insert(Endpoint),
    /// A replica announced before, with a changed field (typically
    /// `Ready` → `Draining`).
    Update(Endpoint),
    /// The replica with this id is gone.
    Remove(String),
}

impl Change {
    /// The id the change is about.
    pub fn id(&self) -> &str {
        match self {
            Change::Insert(e) | Change::Update(e) => &e.id,
            Change::Remove(id) => id,
        }
    }
}

/// The endpoints a consumer has been told about, keyed by id: turns full
/// snapshots (a re-list after a lost watch, a DNS answer, an EndpointSlice
/// list) and single upserts into the minimal [`Change`]s.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EndpointTable {
    endpoints: BTreeMap<String, Endpoint>,
}

impl EndpointTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `endpoint`; returns `Insert` for a new id, `Update` for a
    /// changed one and `None` when nothing changed.
    pub fn upsert(&mut self, endpoint: Endpoint) -> Option<Change> {
        match self.endpoints.get(&endpoint.id) {
            Some(known) if *known == endpoint => None,
            Some(_) => {
                self.endpoints.insert(endpoint.id.clone(), endpoint.clone());
                Some(Change::Update(endpoint))
            }
            None => {
                self.endpoints.insert(endpoint.id.clone(), endpoint.clone());
                Some(Change::Insert(endpoint))
            }
        }
    }

    /// Forgets `id`; returns `Remove` when it was known.
    pub fn remove(&mut self, id: &str) -> Option<Change> {
        self.endpoints.remove(id).map(|e| Change::Remove(e.id))
    }

    /// Applies one change (an `Insert` of a known id counts as an update);
    /// returns the change as it applies to this table, or `None` when it
    /// changes nothing.
    pub fn apply(&mut self, change: Change) -> Option<Change> {
        match change {
            Change::Insert(e) | Change::Update(e) => self.upsert(e),
            Change::Remove(id) => self.remove(&id),
        }
    }

    /// Replaces the whole set with `snapshot` and returns the changes that
    /// lead there: removals first, then inserts and updates. When the
    /// snapshot names an id twice, the last one wins.
    pub fn replace(&mut self, snapshot: impl IntoIterator<Item = Endpoint>) -> Vec<Change> {
        let mut next: BTreeMap<String, Endpoint> = BTreeMap::new();
        for e in snapshot {
            next.insert(e.id.clone(), e);
        }
        let mut changes: Vec<Change> = self
            .endpoints
            .keys()
            .filter(|id| !next.contains_key(*id))
            .map(|id| Change::Remove(id.clone()))
            .collect();
        for e in next.values() {
            match self.endpoints.get(&e.id) {
                Some(known) if known == e => {}
                Some(_) => changes.push(Change::Update(e.clone())),
                None => changes.push(Change::Insert(e.clone())),
            }
        }
        self.endpoints = next;
        changes
    }

    /// The endpoint with this id.
    pub fn get(&self, id: &str) -> Option<&Endpoint> {
        self.endpoints.get(id)
    }

    /// Every endpoint, by id.
    pub fn iter(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values()
    }

    /// How many endpoints are known.
    pub fn len(&self) -> usize {
        self.endpoints.len()
    }

    /// `true` when no endpoint is known.
    pub fn is_empty(&self) -> bool {
        self.endpoints.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(id: &str, port: u16) -> Endpoint {
        Endpoint::ready(id, SocketAddr::from(([127, 0, 0, 1], port)), "1")
    }

    #[test]
    fn replace_yields_the_minimal_changes() {
        let mut t = EndpointTable::new();
        assert_eq!(
            t.replace([ep("a", 1), ep("b", 2)]),
            vec![Change::Insert(ep("a", 1)), Change::Insert(ep("b", 2))]
        );
        // b drains, a goes, c comes; nothing for an unchanged endpoint.
        let changes = t.replace([ep("b", 2).draining(), ep("c", 3)]);
        assert_eq!(
            changes,
            vec![
                Change::Remove("a".into()),
                Change::Update(ep("b", 2).draining()),
                Change::Insert(ep("c", 3)),
            ]
        );
        assert!(t.replace([ep("b", 2).draining(), ep("c", 3)]).is_empty());
        assert_eq!(t.len(), 2);
    }

    #[test]
    fn repeated_changes_are_absorbed() {
        let mut t = EndpointTable::new();
        assert_eq!(
            t.apply(Change::Insert(ep("a", 1))),
            Some(Change::Insert(ep("a", 1)))
        );
        assert_eq!(t.apply(Change::Insert(ep("a", 1))), None);
        assert_eq!(
            t.apply(Change::Insert(ep("a", 9))),
            Some(Change::Update(ep("a", 9)))
        );
        assert_eq!(t.apply(Change::Remove("zz".into())), None);
        assert_eq!(
            t.apply(Change::Remove("a".into())),
            Some(Change::Remove("a".into()))
        );
        assert!(t.is_empty());
    }
}
