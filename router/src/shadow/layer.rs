use std::fmt;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tower::Layer;

use super::compare::Discard;
use super::service::Shadow;
use crate::error::{ConfigError, ConfigErrorKind};

/// Name of the shadow counter; labels `shadow` (the name) and `outcome`
/// (`mirrored`, `dropped`, `completed`, `failed`, `timed_out`).
pub const SHADOW_TOTAL: &str = "convoy_router_shadow_total";

/// Shadow settings.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ShadowConfig {
    /// Name used as the `shadow` metric label.
    pub name: String,
    /// Fraction of requests mirrored, `0.0..=1.0`; exact over any window
    /// (every `1/fraction`-th request), not random.
    pub fraction: f64,
    /// Most shadow requests in flight; excess mirrors are dropped and counted.
    pub max_in_flight: usize,
    /// A shadow request still running after this is abandoned and counted
    /// as `timed_out`, so a hung shadow cannot hold a permit forever.
    pub timeout: Duration,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            name: "shadow".to_owned(),
            fraction: 1.0,
            max_in_flight: 64,
            timeout: Duration::from_secs(30),
        }
    }
}

/// Counters of a shadow layer.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct ShadowStats {
    /// Mirrors sent to the shadow.
    pub mirrored: u64,
    /// Mirrors dropped because `max_in_flight` were already running (or no runtime).
    pub dropped: u64,
    /// Shadow requests that completed successfully.
    pub completed: u64,
    /// Shadow requests that failed.
    pub failed: u64,
    /// Shadow requests abandoned after `timeout`.
    pub timed_out: u64,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) mirrored: AtomicU64,
    pub(crate) dropped: AtomicU64,
    pub(crate) completed: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) timed_out: AtomicU64,
}

type Cloner<Req> = Box<dyn Fn(&Req) -> Req + Send + Sync>;

/// State shared by every service made by one layer: the in-flight bound is global.
pub(crate) struct Shared<Req> {
    pub(crate) name: String,
    fraction: f64,
    seq: AtomicU64,
    permits: Arc<Semaphore>,
    pub(crate) timeout: Duration,
    pub(crate) cloner: Cloner<Req>,
    pub(crate) counters: Counters,
}

impl<Req> Shared<Req> {
    /// Decides whether this request is mirrored and reserves its permit.
    pub(crate) fn admit(&self) -> Option<OwnedSemaphorePermit> {
        if self.fraction <= 0.0 {
            return None;
        }
        let n = self.seq.fetch_add(1, Ordering::Relaxed) as f64;
        if ((n + 1.0) * self.fraction).floor() <= (n * self.fraction).floor() {
            return None;
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(p) if tokio::runtime::Handle::try_current().is_ok() => Some(p),
            _ => {
                self.count("dropped", &self.counters.dropped);
                None
            }
        }
    }

    pub(crate) fn count(&self, outcome: &'static str, counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
        metrics::counter!(SHADOW_TOTAL, "shadow" => self.name.clone(), "outcome" => outcome)
            .increment(1);
    }

    pub(crate) fn stats(&self) -> ShadowStats {
        let c = &self.counters;
        ShadowStats {
            mirrored: c.mirrored.load(Ordering::Relaxed),
            dropped: c.dropped.load(Ordering::Relaxed),
            completed: c.completed.load(Ordering::Relaxed),
            failed: c.failed.load(Ordering::Relaxed),
            timed_out: c.timed_out.load(Ordering::Relaxed),
        }
    }
}

/// Wraps a primary service into a [`Shadow`] that mirrors to `T`.
pub struct ShadowLayer<T, Req, H = Discard> {
    shadow: T,
    shared: Arc<Shared<Req>>,
    hook: Arc<H>,
    _req: PhantomData<fn(Req)>,
}

impl<T: Clone, Req, H> Clone for ShadowLayer<T, Req, H> {
    fn clone(&self) -> Self {
        Self {
            shadow: self.shadow.clone(),
            shared: self.shared.clone(),
            hook: self.hook.clone(),
            _req: PhantomData,
        }
    }
}

impl<T, Req, H> fmt::Debug for ShadowLayer<T, Req, H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ShadowLayer")
            .field("name", &self.shared.name)
            .field("fraction", &self.shared.fraction)
            .field("stats", &self.shared.stats())
            .finish_non_exhaustive()
    }
}

impl<T, Req: Clone + 'static> ShadowLayer<T, Req, Discard> {
    /// Mirrors `config.fraction` of requests to `shadow`, copying them with `Clone`.
    pub fn new(shadow: T, config: ShadowConfig) -> Result<Self, ConfigError> {
        Self::with_cloner(shadow, config, Req::clone)
    }
}

impl<T, Req: 'static> ShadowLayer<T, Req, Discard> {
    /// Mirrors requests copied with `cloner` (see the module docs on bodies).
    pub fn with_cloner<C>(shadow: T, config: ShadowConfig, cloner: C) -> Result<Self, ConfigError>
    where
        C: Fn(&Req) -> Req + Send + Sync + 'static,
    {
        if !(0.0..=1.0).contains(&config.fraction) {
            return Err(ConfigError::new(
                ConfigErrorKind::OutOfRange,
                format!("shadow fraction {} is not in 0..=1", config.fraction),
            ));
        }
        if config.max_in_flight == 0 || config.timeout.is_zero() {
            return Err(ConfigError::new(
                ConfigErrorKind::Zero,
                "shadow max_in_flight and timeout must be positive",
            ));
        }
        let max = config.max_in_flight.min(Semaphore::MAX_PERMITS);
        Ok(Self {
            shadow,
            shared: Arc::new(Shared {
                name: config.name,
                fraction: config.fraction,
                seq: AtomicU64::new(0),
                permits: Arc::new(Semaphore::new(max)),
                timeout: config.timeout,
                cloner: Box::new(cloner),
                counters: Counters::default(),
            }),
            hook: Arc::new(Discard),
            _req: PhantomData,
        })
    }

    /// Hands each (primary, shadow) result pair to `hook`.
    pub fn compare<H>(self, hook: H) -> ShadowLayer<T, Req, H> {
        ShadowLayer {
            shadow: self.shadow,
            shared: self.shared,
            hook: Arc::new(hook),
            _req: PhantomData,
        }
    }
}

impl<T, Req, H> ShadowLayer<T, Req, H> {
    /// Counters of every service made by this layer.
    pub fn stats(&self) -> ShadowStats {
        self.shared.stats()
    }
}

impl<P, T: Clone, Req, H> Layer<P> for ShadowLayer<T, Req, H> {
    type Service = Shadow<P, T, Req, H>;

    fn layer(&self, primary: P) -> Self::Service {
        Shadow::new(
            primary,
            self.shadow.clone(),
            self.shared.clone(),
            self.hook.clone(),
        )
    }
}

/// Copies an `http::Request` whose body is `Clone` (method, URI, version,
/// headers and body; extensions are not copied).
pub fn clone_http_request<B: Clone>(req: &http::Request<B>) -> http::Request<B> {
    let mut copy = http::Request::new(req.body().clone());
    *copy.method_mut() = req.method().clone();
    *copy.uri_mut() = req.uri().clone();
    *copy.version_mut() = req.version();
    *copy.headers_mut() = req.headers().clone();
    copy
}
