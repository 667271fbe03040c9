use http::HeaderName;

/// Forces a request to a named backend, ahead of weights and sticky keys.
///
/// An override naming a backend the split does not have is ignored (the
/// request is split normally) and counted in
/// `convoy_router_unknown_override_total`.
pub trait Override<Req>: Send + Sync {
    /// The backend this request must go to, if any.
    fn backend<'a>(&'a self, req: &'a Req) -> Option<&'a str>;
}

/// Reads the backend name from an HTTP header, e.g. `x-convoy-version: v2`.
#[derive(Clone, Debug)]
pub struct HeaderOverride {
    name: HeaderName,
}

impl HeaderOverride {
    /// Override by the value of header `name`.
    pub fn new(name: HeaderName) -> Self {
        Self { name }
    }
}

impl<B> Override<http::Request<B>> for HeaderOverride {
    fn backend<'a>(&'a self, req: &'a http::Request<B>) -> Option<&'a str> {
        req.headers().get(&self.name)?.to_str().ok()
    }
}

/// Sends every request matching a predicate to one backend (testers, A/B cohorts).
#[derive(Clone)]
pub struct PredicateOverride<F> {
    predicate: F,
    backend: String,
}

impl<F> std::fmt::Debug for PredicateOverride<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PredicateOverride")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

impl<F> PredicateOverride<F> {
    /// Requests for which `predicate` is true go to `backend`.
    pub fn new(predicate: F, backend: impl Into<String>) -> Self {
        Self {
            predicate,
            backend: backend.into(),
        }
    }
}

impl<Req, F> Override<Req> for PredicateOverride<F>
where
    F: Fn(&Req) -> bool + Send + Sync + 'static,
{
    fn backend<'a>(&'a self, req: &'a Req) -> Option<&'a str> {
        (self.predicate)(req).then_some(self.backend.as_str())
    }
}
