use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use tower::Layer;

use super::compare::Discard;
use super::service::Shadow;
use super::shared::{ShadowConfig, ShadowStats, Shared};
use crate::error::ConfigError;

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
        Ok(Self {
            shadow,
            shared: Arc::new(Shared::new(config, Box::new(cloner))?),
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
