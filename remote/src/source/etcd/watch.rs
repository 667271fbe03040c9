//! [`EtcdSource`]: list the prefix, watch from the next revision, re-list
//! after any break.

use std::convert::Infallible;

use futures::StreamExt;
use tokio::sync::mpsc;

use super::client::{pb, Client, EtcdError};
use super::{Backoff, EtcdConfig};
use crate::endpoint::{Change, Endpoint, EndpointTable};
use crate::error::ConfigError;
use crate::source::{ChangeStream, EndpointSource, SourceError};

/// The endpoints registered under a prefix in etcd (see the
/// [module docs](super)).
///
/// `changes()` spawns the watching task on the current tokio runtime; it
/// ends when the stream is dropped.
#[derive(Debug)]
pub struct EtcdSource {
    client: Client,
    max_backoff: std::time::Duration,
}

impl EtcdSource {
    /// Checks `config`; connects lazily.
    pub fn new(config: &EtcdConfig) -> Result<Self, ConfigError> {
        Ok(Self {
            client: Client::new(config)?,
            max_backoff: config.max_backoff,
        })
    }
}

type Tx = mpsc::Sender<Result<Change, SourceError>>;

/// Why following stopped.
enum Stop {
    /// Nobody listens any more.
    Closed,
    /// etcd failed: report, wait, re-list.
    Failed(EtcdError),
}

impl From<EtcdError> for Stop {
    fn from(e: EtcdError) -> Self {
        Stop::Failed(e)
    }
}

async fn send(tx: &Tx, item: Result<Change, SourceError>) -> Result<(), Stop> {
    tx.send(item).await.map_err(|_| Stop::Closed)
}

fn parse(client: &Client, kv: &pb::KeyValue) -> Result<Endpoint, SourceError> {
    let id = client.id_of(&kv.key).ok_or_else(|| {
        SourceError::new(
            "etcd",
            format!("key {:?} has no id", String::from_utf8_lossy(&kv.key)),
        )
    })?;
    let endpoint: Endpoint = serde_json::from_slice(&kv.value)
        .map_err(|e| SourceError::new("etcd", format!("key {id:?}: not an endpoint: {e}")))?;
    if endpoint.id != id {
        return Err(SourceError::new(
            "etcd",
            format!("key {id:?} holds the endpoint of {:?}", endpoint.id),
        ));
    }
    Ok(endpoint)
}

/// Lists, yields the differences, then follows the watch until it breaks.
async fn follow(
    client: &Client,
    table: &mut EndpointTable,
    backoff: &mut Backoff,
    tx: &Tx,
) -> Result<Infallible, Stop> {
    let (kvs, revision) = client.list().await?;
    let mut snapshot = Vec::with_capacity(kvs.len());
    for kv in &kvs {
        match parse(client, kv) {
            Ok(e) => snapshot.push(e),
            Err(e) => send(tx, Err(e)).await?,
        }
    }
    for change in table.replace(snapshot) {
        send(tx, Ok(change)).await?;
    }
    let mut watch = client.watch(revision + 1).await?;
    backoff.reset();
    loop {
        let rsp = match watch.message().await {
            Ok(Some(rsp)) => rsp,
            Ok(None) => return Err(EtcdError::new("watch", "stream ended").into()),
            Err(status) => return Err(EtcdError::new("watch", status).into()),
        };
        if rsp.compact_revision != 0 || rsp.canceled {
            return Err(EtcdError::new(
                "watch",
                format!(
                    "canceled (compacted at {}): {}",
                    rsp.compact_revision, rsp.cancel_reason
                ),
            )
            .into());
        }
        for event in rsp.events {
            let Some(kv) = event.kv else { continue };
            let change = if event.r#type == pb::event::EventType::Delete as i32 {
                client.id_of(&kv.key).and_then(|id| table.remove(id))
            } else {
                match parse(client, &kv) {
                    Ok(e) => table.upsert(e),
                    Err(e) => {
                        send(tx, Err(e)).await?;
                        None
                    }
                }
            };
            if let Some(change) = change {
                send(tx, Ok(change)).await?;
            }
        }
    }
}

async fn run(client: Client, mut backoff: Backoff, tx: Tx) {
    let mut table = EndpointTable::new();
    loop {
        let outcome = tokio::select! {
            outcome = follow(&client, &mut table, &mut backoff, &tx) => outcome,
            () = tx.closed() => return,
        };
        match outcome {
            Ok(never) => match never {},
            Err(Stop::Closed) => return,
            Err(Stop::Failed(e)) => {
                tracing::warn!(error = %e, "etcd endpoint source: will list again");
                if tx.send(Err(SourceError::new("etcd", e))).await.is_err() {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff.next_wait()) => {}
                    () = tx.closed() => return,
                }
            }
        }
    }
}

impl EndpointSource for EtcdSource {
    fn changes(self) -> ChangeStream {
        let (tx, rx) = mpsc::channel(64);
        tokio::spawn(run(self.client, Backoff::new(self.max_backoff), tx));
        futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|c| (c, rx)) })
            .boxed()
    }
}
