//! Following a stage or alias: when it points at a new version, that
//! version is downloaded and verified, then announced, so the server can
//! load it beside the current one and roll traffic over.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::cache::{ModelCache, Verify};
use crate::client::{MlflowClient, ModelVersion};
use crate::error::{RegistryError, RegistryErrorKind};
use crate::uri::Selector;

/// What a [`Watcher`] saw.
#[derive(Debug)]
#[non_exhaustive]
pub enum RegistryEvent {
    /// The stage or alias points at a version other than the one serving;
    /// it is downloaded and verified at `path`.
    NewVersion {
        /// The version serving until now, if any.
        from: Option<u64>,
        /// The registry's description of the new version.
        version: ModelVersion,
        /// Its verified folder in the cache.
        path: PathBuf,
    },
    /// The new version failed download or verification; the current one
    /// keeps serving. Reported once per version.
    Rejected {
        /// The version refused.
        version: u64,
        /// Why.
        error: RegistryError,
    },
    /// The registry could not be asked (down, or the stage/alias vanished);
    /// serving is untouched. Reported once until it recovers.
    Unavailable {
        /// Why.
        error: RegistryError,
    },
    /// The registry answers again after being unavailable.
    Recovered,
}

/// Polls one registered model's stage or alias.
pub struct Watcher {
    client: MlflowClient,
    cache: ModelCache,
    name: String,
    selector: Selector,
    interval: Duration,
    verify: Arc<Verify>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("client", &self.client)
            .field("name", &self.name)
            .field("selector", &self.selector)
            .field("interval", &self.interval)
            .finish()
    }
}

/// Stops a running watcher when dropped or on [`WatcherHandle::stop`].
#[derive(Debug)]
pub struct WatcherHandle {
    task: tokio::task::JoinHandle<()>,
}

impl WatcherHandle {
    /// Stops polling.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for WatcherHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Watcher {
    /// A watcher of `name` at `selector`, polling every `interval`;
    /// `verify` runs on every new version's folder before it is announced.
    pub fn new(
        client: MlflowClient,
        cache: ModelCache,
        name: impl Into<String>,
        selector: Selector,
        interval: Duration,
        verify: Arc<Verify>,
    ) -> Self {
        Self {
            client,
            cache,
            name: name.into(),
            selector,
            interval: interval.max(Duration::from_millis(10)),
            verify,
        }
    }

    /// Starts polling on the current runtime, `current` being the version
    /// serving now. Events arrive on the receiver (bounded: the watcher
    /// waits for the server to take each one).
    pub fn spawn(self, current: Option<u64>) -> (WatcherHandle, mpsc::Receiver<RegistryEvent>) {
        let (tx, rx) = mpsc::channel(8);
        let task = tokio::spawn(self.run(current, tx));
        (WatcherHandle { task }, rx)
    }

    async fn run(self, mut current: Option<u64>, tx: mpsc::Sender<RegistryEvent>) {
        let mut rejected: Option<u64> = None;
        let mut unavailable = false;
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let resolved = self.client.resolve(&self.name, &self.selector).await;
            let version = match resolved {
                Ok(v) => {
                    if unavailable {
                        unavailable = false;
                        tracing::info!(model = %self.name, "registry reachable again");
                        if tx.send(RegistryEvent::Recovered).await.is_err() {
                            return;
                        }
                    }
                    v
                }
                Err(error) => {
                    if !unavailable {
                        unavailable = true;
                        tracing::warn!(model = %self.name, %error, "registry unavailable; serving continues");
                        if tx.send(RegistryEvent::Unavailable { error }).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
            };
            if Some(version.version) == current || Some(version.version) == rejected {
                continue;
            }
            tracing::info!(model = %self.name, from = ?current, to = version.version, "new version in the registry");
            let event = match self
                .cache
                .fetch(&self.client, &version, &*self.verify)
                .await
            {
                Ok(path) => {
                    let from = current.replace(version.version);
                    rejected = None;
                    RegistryEvent::NewVersion {
                        from,
                        version,
                        path,
                    }
                }
                Err(error) if error.kind() == RegistryErrorKind::Unreachable => {
                    // The registry went away mid-download: try again next
                    // time, without refusing the version.
                    if !unavailable {
                        unavailable = true;
                        tracing::warn!(model = %self.name, %error, "registry unavailable; serving continues");
                        if tx.send(RegistryEvent::Unavailable { error }).await.is_err() {
                            return;
                        }
                    }
                    continue;
                }
                Err(error) => {
                    tracing::warn!(model = %self.name, version = version.version, %error, "new version refused");
                    rejected = Some(version.version);
                    RegistryEvent::Rejected {
                        version: version.version,
                        error,
                    }
                }
            };
            if tx.send(event).await.is_err() {
                return;
            }
        }
    }
}
