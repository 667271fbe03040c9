//! A list of endpoints given in configuration, optionally changed at run
//! time.

use futures::stream::{self, StreamExt};
use tokio::sync::watch;

use super::{ChangeStream, EndpointSource};
use crate::endpoint::{Endpoint, EndpointTable};

/// A list of endpoints: yields them as inserts, then whatever a
/// [`StaticHandle`] sets later (as the changes between the two lists).
///
/// ```
/// use convoy_remote::{Change, Endpoint, EndpointSource, StaticSource};
/// use futures::StreamExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let a = Endpoint::ready("a", "10.0.0.1:8080".parse().unwrap(), "1");
/// let (source, handle) = StaticSource::with_handle([a.clone()]);
/// let mut changes = source.changes();
/// assert_eq!(changes.next().await.unwrap().unwrap(), Change::Insert(a.clone()));
/// handle.set([a.clone().draining()]);
/// assert_eq!(changes.next().await.unwrap().unwrap(), Change::Update(a.draining()));
/// # }
/// ```
#[derive(Debug)]
pub struct StaticSource {
    rx: watch::Receiver<Vec<Endpoint>>,
    // Held by a source without a handle, so its stream stays open (a fixed
    // list never ends: a balancer keeps its replicas).
    _tx: Option<watch::Sender<Vec<Endpoint>>>,
}

/// Replaces the list of a [`StaticSource`]; dropping every handle leaves
/// the last list in place.
#[derive(Debug, Clone)]
pub struct StaticHandle {
    tx: watch::Sender<Vec<Endpoint>>,
}

impl StaticSource {
    /// A fixed list.
    pub fn new(endpoints: impl IntoIterator<Item = Endpoint>) -> Self {
        let (tx, rx) = watch::channel(endpoints.into_iter().collect());
        Self { rx, _tx: Some(tx) }
    }

    /// A list and the handle that changes it.
    pub fn with_handle(endpoints: impl IntoIterator<Item = Endpoint>) -> (Self, StaticHandle) {
        let (tx, rx) = watch::channel(endpoints.into_iter().collect());
        (Self { rx, _tx: None }, StaticHandle { tx })
    }
}

impl StaticHandle {
    /// Replaces the whole list; the source yields the difference.
    pub fn set(&self, endpoints: impl IntoIterator<Item = Endpoint>) {
        self.tx.send_replace(endpoints.into_iter().collect());
    }

    /// Adds or replaces one endpoint (by id).
    pub fn upsert(&self, endpoint: Endpoint) {
        self.tx.send_modify(|list| {
            list.retain(|e| e.id != endpoint.id);
            list.push(endpoint);
        });
    }

    /// Removes the endpoint with this id.
    pub fn remove(&self, id: &str) {
        self.tx.send_modify(|list| list.retain(|e| e.id != id));
    }
}

impl EndpointSource for StaticSource {
    fn changes(self) -> ChangeStream {
        let Self { mut rx, _tx } = self;
        rx.mark_changed();
        stream::unfold(
            (rx, EndpointTable::new(), _tx),
            |(mut rx, mut table, tx)| async move {
                loop {
                    if rx.changed().await.is_err() {
                        // Every handle dropped: the list stays as it is.
                        futures::future::pending::<()>().await;
                    }
                    let list = rx.borrow_and_update().clone();
                    let changes = table.replace(list);
                    if !changes.is_empty() {
                        return Some((changes, (rx, table, tx)));
                    }
                }
            },
        )
        .flat_map(|changes| stream::iter(changes.into_iter().map(Ok)))
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Change;
    use futures::StreamExt;

    fn ep(id: &str, port: u16) -> Endpoint {
        Endpoint::ready(id, ([127, 0, 0, 1], port).into(), "1")
    }

    #[tokio::test]
    async fn a_handle_yields_differences_and_the_stream_outlives_it() {
        let (source, handle) = StaticSource::with_handle([ep("a", 1), ep("b", 2)]);
        let mut changes = source.changes();
        let first: Vec<Change> = changes.by_ref().take(2).map(Result::unwrap).collect().await;
        assert_eq!(
            first,
            vec![Change::Insert(ep("a", 1)), Change::Insert(ep("b", 2))]
        );
        handle.remove("a");
        handle.upsert(ep("c", 3));
        // Both edits may be seen as one list: the changes are the difference.
        assert_eq!(
            changes.next().await.unwrap().unwrap(),
            Change::Remove("a".into())
        );
        assert_eq!(
            changes.next().await.unwrap().unwrap(),
            Change::Insert(ep("c", 3))
        );
        handle.set([ep("b", 2)]);
        drop(handle);
        assert_eq!(
            changes.next().await.unwrap().unwrap(),
            Change::Remove("c".into())
        );
        // No handle left: the list stays, the stream neither ends nor yields.
        tokio_test::assert_pending!(futures::poll!(changes.next()));
    }
}
