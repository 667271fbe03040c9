//! [`Registration`]: a node's key under a kept-alive lease.

use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use super::client::{Client, EtcdError};
use super::{Backoff, EtcdConfig};
use crate::endpoint::{Endpoint, EndpointState};

#[derive(Debug)]
struct Current {
    endpoint: Endpoint,
    lease: i64,
}

/// A node registered in etcd: its endpoint under `prefix + id`, written
/// under a lease of `ttl` that a background task renews every `ttl / 3`.
///
/// If the lease is lost (etcd lost it, or renewals failed for longer than
/// `ttl`), the task takes a new lease and writes the key again. Dropping the
/// registration stops the renewals: the key goes when the lease expires, as
/// when the process is killed. [`deregister`](Self::deregister) removes it
/// at once.
#[derive(Debug)]
pub struct Registration {
    client: Client,
    current: Arc<Mutex<Current>>,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Registration {
    /// Takes a lease, writes `endpoint` under it and starts the renewals.
    pub async fn register(
        config: &EtcdConfig,
        endpoint: Endpoint,
        ttl: Duration,
    ) -> Result<Self, EtcdError> {
        if ttl < Duration::from_secs(1) {
            return Err(EtcdError::new("register", "ttl must be at least 1 s"));
        }
        let client = Client::new(config).map_err(|e| EtcdError::new("register", e))?;
        let lease = client.grant(ttl).await?;
        client.put(&endpoint, lease).await?;
        let current = Arc::new(Mutex::new(Current { endpoint, lease }));
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(renew(
            client.clone(),
            current.clone(),
            ttl,
            Backoff::new(config.max_backoff),
            stopped,
        ));
        Ok(Self {
            client,
            current,
            stop: Some(stop),
            task,
        })
    }

    /// The endpoint as registered.
    pub fn endpoint(&self) -> Endpoint {
        self.current.lock().endpoint.clone()
    }

    /// The lease the key is written under now.
    pub fn lease(&self) -> i64 {
        self.current.lock().lease
    }

    /// Writes a new state (`Draining` before shutting down): fronts stop
    /// sending new requests once they see it.
    pub async fn set_state(&self, state: EndpointState) -> Result<(), EtcdError> {
        let (endpoint, lease) = {
            let mut c = self.current.lock();
            c.endpoint.state = state;
            (c.endpoint.clone(), c.lease)
        };
        self.client.put(&endpoint, lease).await
    }

    /// Stops the renewals and revokes the lease: the key is deleted at once.
    pub async fn deregister(mut self) -> Result<(), EtcdError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        let lease = self.current.lock().lease;
        self.client.revoke(lease).await
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn renew(
    client: Client,
    current: Arc<Mutex<Current>>,
    ttl: Duration,
    mut backoff: Backoff,
    mut stopped: oneshot::Receiver<()>,
) {
    let period = ttl / 3;
    let mut wait = period;
    loop {
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = &mut stopped => return,
        }
        let lease = current.lock().lease;
        let outcome = match client.keep_alive(lease).await {
            Ok(left) if left > 0 => Ok(()),
            Ok(_) => {
                // The lease is gone (expired while etcd was unreachable):
                // register again under a new one.
                tracing::warn!(lease, "etcd lease lost: registering again");
                reregister(&client, &current, ttl).await
            }
            Err(e) => Err(e),
        };
        wait = match outcome {
            Ok(()) => {
                backoff.reset();
                period
            }
            Err(e) => {
                tracing::warn!(error = %e, "etcd registration: renewal failed");
                backoff.next_wait().min(period)
            }
        };
    }
}

async fn reregister(
    client: &Client,
    current: &Mutex<Current>,
    ttl: Duration,
) -> Result<(), EtcdError> {
    let lease = client.grant(ttl).await?;
    let endpoint = {
        let mut c = current.lock();
        c.lease = lease;
        c.endpoint.clone()
    };
    client.put(&endpoint, lease).await
}
