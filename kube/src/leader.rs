//! Lease-based leader election (`coordination.k8s.io/v1` Lease), so only one
//! autoscaler of a Deployment writes its scale.
//!
//! The rules are client-go's: a candidate takes the Lease when it is absent,
//! released, or its record has not changed for the record's
//! `leaseDurationSeconds` (else our `lease_duration`) as seen on
//! the candidate's own clock (no clock comparison between machines); the
//! holder renews every `retry_period`, each write carrying the
//! `resourceVersion` it read, so of two candidates racing only one write
//! succeeds and the other gets 409 and stays a follower. A holder that has
//! not renewed within `renew_deadline` (less than `lease_duration`) stops
//! calling itself leader before anyone else may take over.

use std::fmt;
use std::sync::Arc;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::PostParams;
use kube::{Api, Client};
use parking_lot::Mutex;
use tokio::time::{Duration, Instant};

use crate::error::{check_name, Error, ErrorKind};
use crate::health::{ApiHealth, HealthCell};

/// Settings of a [`LeaderElector`]; the durations are client-go's (15 s,
/// 10 s, 2 s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderConfig {
    /// The Lease's namespace.
    pub namespace: String,
    /// The Lease's name (one per autoscaled Deployment).
    pub lease: String,
    /// This candidate's identity (usually its pod name).
    pub identity: String,
    /// How long others wait, after they last saw the record change, before
    /// taking the Lease over.
    pub lease_duration: Duration,
    /// How long the holder goes on calling itself leader after its last
    /// successful renewal.
    pub renew_deadline: Duration,
    /// The period of [`LeaderElector::run`]'s attempts.
    pub retry_period: Duration,
    /// The longest one API call may take (less than `renew_deadline`, so a
    /// hung renewal cannot outlive the leadership it renews).
    pub call_timeout: Duration,
}

impl LeaderConfig {
    /// A config with client-go's durations.
    pub fn new(
        namespace: impl Into<String>,
        lease: impl Into<String>,
        identity: impl Into<String>,
    ) -> Self {
        Self {
            namespace: namespace.into(),
            lease: lease.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
            call_timeout: Duration::from_secs(5),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        check_name("namespace", &self.namespace)?;
        check_name("lease", &self.lease)?;
        if self.identity.is_empty() {
            return Err(Error::config("identity", "must not be empty"));
        }
        if self.retry_period.is_zero() {
            return Err(Error::config("retry_period", "must be greater than zero"));
        }
        if self.call_timeout.is_zero() || self.call_timeout >= self.renew_deadline {
            return Err(Error::config(
                "call_timeout",
                "must be greater than zero and less than renew_deadline",
            ));
        }
        if self.renew_deadline <= self.retry_period {
            return Err(Error::config(
                "renew_deadline",
                "must be greater than retry_period",
            ));
        }
        if self.lease_duration <= self.renew_deadline {
            return Err(Error::config(
                "lease_duration",
                "must be greater than renew_deadline",
            ));
        }
        if self.lease_duration.as_secs() > i32::MAX as u64
            || self.lease_duration.subsec_nanos() != 0
        {
            return Err(Error::config(
                "lease_duration",
                "must be a whole number of seconds",
            ));
        }
        Ok(())
    }
}

/// Who holds the Lease, as one [`LeaderElector::step`] found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// This candidate holds it (just acquired or renewed).
    Leader,
    /// Someone else holds it (`None`: nobody, and our take-over lost a race).
    Follower {
        /// The holder's identity.
        holder: Option<String>,
    },
}

#[derive(Debug)]
struct Shared {
    config: LeaderConfig,
    renewed_at: Mutex<Option<Instant>>,
    health: HealthCell,
}

/// A cheap, cloneable view of an election, for the writers it guards.
#[derive(Clone)]
pub struct LeaderHandle(Arc<Shared>);

impl fmt::Debug for LeaderHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderHandle")
            .field("lease", &self.0.config.lease)
            .field("identity", &self.0.config.identity)
            .field("is_leader", &self.is_leader())
            .finish()
    }
}

impl LeaderHandle {
    /// Whether this candidate holds the Lease now: it renewed it less than
    /// `renew_deadline` ago.
    pub fn is_leader(&self) -> bool {
        self.0.renewed_at.lock().is_some_and(|at| {
            Instant::now().saturating_duration_since(at) < self.0.config.renew_deadline
        })
    }

    /// The Lease's name.
    pub fn lease(&self) -> &str {
        &self.0.config.lease
    }

    /// This candidate's identity.
    pub fn identity(&self) -> &str {
        &self.0.config.identity
    }

    /// Whether the API server answered the election's last call.
    pub fn health(&self) -> ApiHealth {
        self.0.health.get()
    }
}

/// One candidate in a Lease election.
pub struct LeaderElector {
    api: Api<Lease>,
    shared: Arc<Shared>,
    /// The holder and renew time last seen, and when we first saw them.
    observed: Option<(Option<String>, Option<MicroTime>, Instant)>,
}

impl fmt::Debug for LeaderElector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LeaderElector")
            .field("config", &self.shared.config)
            .field("is_leader", &self.handle().is_leader())
            .finish_non_exhaustive()
    }
}

impl LeaderElector {
    /// A candidate; fails with [`ErrorKind::Config`] naming the field for
    /// names that are not object names and durations out of order
    /// (`retry_period < renew_deadline < lease_duration`).
    pub fn new(client: Client, config: LeaderConfig) -> Result<Self, Error> {
        config.validate()?;
        Ok(Self {
            api: Api::namespaced(client, &config.namespace),
            shared: Arc::new(Shared {
                health: HealthCell::new("leader", &config.lease),
                config,
                renewed_at: Mutex::new(None),
            }),
            observed: None,
        })
    }

    /// The view for writers.
    pub fn handle(&self) -> LeaderHandle {
        LeaderHandle(self.shared.clone())
    }

    fn config(&self) -> &LeaderConfig {
        &self.shared.config
    }

    fn lost(&self) {
        *self.shared.renewed_at.lock() = None;
    }

    fn renewed(&self) {
        *self.shared.renewed_at.lock() = Some(Instant::now());
    }

    /// The gauge `convoy_kube_leader` (labels `lease`, `identity`): 1 while
    /// this candidate holds the Lease.
    fn publish(&self) {
        let config = self.config();
        metrics::gauge!("convoy_kube_leader", "lease" => config.lease.clone(), "identity" => config.identity.clone())
            .set(if self.handle().is_leader() { 1.0 } else { 0.0 });
    }

    /// One API call, bounded by `call_timeout` and recorded in the health.
    async fn api_call<T>(
        &self,
        context: &str,
        call: impl std::future::Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, Error> {
        self.shared
            .health
            .call(self.config().call_timeout, context, call)
            .await
    }

    fn spec(&self, now: Timestamp, acquired: Option<MicroTime>, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config().identity.clone()),
            lease_duration_seconds: Some(self.config().lease_duration.as_secs() as i32),
            acquire_time: Some(acquired.unwrap_or(MicroTime(now))),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..LeaseSpec::default()
        }
    }

    /// One attempt to acquire or renew. An unreachable API server is an
    /// error and leaves the role to time out by `renew_deadline`; a lost
    /// race (409) is [`Role::Follower`].
    /// Publishes the gauge `convoy_kube_leader` after each attempt.
    pub async fn step(&mut self) -> Result<Role, Error> {
        let role = self.step_once().await;
        self.publish();
        role
    }

    async fn step_once(&mut self) -> Result<Role, Error> {
        let name = self.config().lease.clone();
        let now = Timestamp::now();
        let found = self.api_call("get lease", self.api.get_opt(&name)).await?;
        let Some(mut lease) = found else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(self.config().namespace.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(now, None, 0)),
            };
            return match self
                .api_call(
                    "create lease",
                    self.api.create(&PostParams::default(), &lease),
                )
                .await
            {
                Ok(_) => {
                    self.renewed();
                    Ok(Role::Leader)
                }
                Err(e) if e.kind() == ErrorKind::Conflict => {
                    self.lost();
                    Ok(Role::Follower { holder: None })
                }
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
        let mine = holder.as_deref() == Some(self.config().identity.as_str());

        let key = (holder.clone(), spec.renew_time.clone());
        let seen_at = match &self.observed {
            Some((h, r, at)) if (h, r) == (&key.0, &key.1) => *at,
            _ => {
                let at = Instant::now();
                self.observed = Some((key.0, key.1, at));
                at
            }
        };
        // The holder's own duration, as written in the record, when it has one.
        let duration = spec
            .lease_duration_seconds
            .and_then(|s| u64::try_from(s).ok())
            .filter(|s| *s > 0)
            .map_or(self.config().lease_duration, Duration::from_secs);
        let expired =
            holder.is_none() || Instant::now().saturating_duration_since(seen_at) >= duration;
        if !mine && !expired {
            self.lost();
            return Ok(Role::Follower { holder });
        }
        lease.spec = Some(if mine {
            self.spec(now, spec.acquire_time, spec.lease_transitions.unwrap_or(0))
        } else {
            self.spec(
                now,
                None,
                spec.lease_transitions.unwrap_or(0).saturating_add(1),
            )
        });
        // `lease.metadata.resourceVersion` is the one we read: a write by
        // anyone since makes this replace answer 409.
        match self
            .api_call(
                "update lease",
                self.api.replace(&name, &PostParams::default(), &lease),
            )
            .await
        {
            Ok(written) => {
                let s = written.spec.unwrap_or_default();
                self.observed = Some((s.holder_identity, s.renew_time, Instant::now()));
                self.renewed();
                Ok(Role::Leader)
            }
            Err(e) if e.kind() == ErrorKind::Conflict => {
                self.lost();
                Ok(Role::Follower { holder })
            }
            Err(e) => Err(e),
        }
    }

    /// Steps every `retry_period`, forever (spawn it); errors are logged.
    pub async fn run(self) {
        self.run_until(std::future::pending::<()>()).await;
    }

    /// Steps every `retry_period` until `shutdown` completes, then
    /// [`release`](Self::release)s the Lease so another candidate takes over
    /// at once (a front stopping on SIGTERM hands over without the
    /// `lease_duration` gap). Errors are logged.
    pub async fn run_until(mut self, shutdown: impl std::future::Future<Output = ()>) {
        let mut tick = tokio::time::interval(self.config().retry_period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                biased;
                () = &mut shutdown => break,
                _ = tick.tick() => match self.step().await {
                    Ok(role) => tracing::debug!(lease = %self.config().lease, ?role, "leader election"),
                    Err(error) => {
                        tracing::warn!(lease = %self.config().lease, %error, "leader election step failed")
                    }
                },
            }
        }
        if let Err(error) = self.release().await {
            tracing::warn!(lease = %self.config().lease, %error, "could not release the lease");
        }
    }

    /// Gives the Lease up at once (holder cleared) if this candidate holds
    /// it, so another takes over without waiting `lease_duration`.
    pub async fn release(&mut self) -> Result<(), Error> {
        if !self.handle().is_leader() {
            return Ok(());
        }
        let name = self.config().lease.clone();
        let Some(mut lease) = self.api_call("get lease", self.api.get_opt(&name)).await? else {
            self.lost();
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config().identity.as_str()) {
            self.lost();
            return Ok(());
        }
        spec.holder_identity = None;
        spec.renew_time = Some(MicroTime(Timestamp::now()));
        lease.spec = Some(spec);
        self.lost();
        self.publish();
        self.api_call(
            "release lease",
            self.api.replace(&name, &PostParams::default(), &lease),
        )
        .await
        .map(|_| ())
    }
}
