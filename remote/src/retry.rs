//! Retrying requests that were never sent, within a budget.
//!
//! A request is retried only when it provably never reached an endpoint
//! (its error chain holds a [`NotSent`]: the connection was refused or could
//! not be made before anything was written), so a retry never runs a model
//! twice. Retries draw on tower's [`TpsBudget`]: every request deposits,
//! every retry withdraws, so a dead cluster sees at most
//! `retry_percent` more requests than its callers send (plus
//! `min_per_sec`), never a retry storm.

use std::sync::Arc;
use std::time::Duration;

use tower::retry::budget::{Budget, TpsBudget};
use tower::retry::{Policy, RetryLayer};
use tower::BoxError;

use crate::connect::NotSent;
use crate::error::ConfigError;

/// Retry budget settings.
#[derive(Debug, Clone, PartialEq)]
pub struct RetryConfig {
    /// How long a deposit counts (1 to 60 s).
    pub ttl: Duration,
    /// Retries allowed each second whatever the traffic.
    pub min_per_sec: u32,
    /// Retries allowed per request on top (0.2: one in five).
    pub retry_percent: f32,
    /// Attempts per request at most, the first included.
    pub max_attempts: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(10),
            min_per_sec: 10,
            retry_percent: 0.2,
            max_attempts: 3,
        }
    }
}

impl RetryConfig {
    fn validate(&self) -> Result<(), ConfigError> {
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&self.ttl) {
            return Err(ConfigError::new("ttl", "must be between 1 s and 60 s"));
        }
        if !(0.0..=1000.0).contains(&self.retry_percent) {
            return Err(ConfigError::new(
                "retry_percent",
                "must be between 0 and 1000",
            ));
        }
        if self.min_per_sec >= i32::MAX as u32 {
            return Err(ConfigError::new("min_per_sec", "is too large"));
        }
        if self.max_attempts == 0 {
            return Err(ConfigError::new("max_attempts", "must be at least 1"));
        }
        Ok(())
    }
}

/// Retries a request whose error says it was never sent, while the shared
/// budget allows (see the [module docs](self)).
#[derive(Debug, Clone)]
pub struct NeverSentPolicy {
    budget: Arc<TpsBudget>,
    max_attempts: u32,
    attempts: u32,
}

impl NeverSentPolicy {
    /// A policy with its own budget.
    pub fn new(config: &RetryConfig) -> Result<Self, ConfigError> {
        config.validate()?;
        Ok(Self {
            budget: Arc::new(TpsBudget::new(
                config.ttl,
                config.min_per_sec,
                config.retry_percent,
            )),
            max_attempts: config.max_attempts,
            attempts: 0,
        })
    }

    /// The policy as a tower layer (`tower::retry::Retry`); requests must
    /// be `Clone` (e.g. `http::Request<Full<Bytes>>`).
    pub fn layer(config: &RetryConfig) -> Result<RetryLayer<Self>, ConfigError> {
        Ok(RetryLayer::new(Self::new(config)?))
    }
}

impl<Req: Clone, Res> Policy<Req, Res, BoxError> for NeverSentPolicy {
    type Future = std::future::Ready<()>;

    fn retry(
        &mut self,
        _req: &mut Req,
        result: &mut Result<Res, BoxError>,
    ) -> Option<Self::Future> {
        if self.attempts == 0 {
            self.budget.deposit();
        }
        self.attempts += 1;
        match result {
            Err(e) if NotSent::is_in(&**e) && self.attempts < self.max_attempts => {
                self.budget.withdraw().then(|| std::future::ready(()))
            }
            _ => None,
        }
    }

    fn clone_request(&mut self, req: &Req) -> Option<Req> {
        Some(req.clone())
    }
}
