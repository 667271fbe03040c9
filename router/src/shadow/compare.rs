use std::fmt;

use tower::BoxError;

/// Receives the primary's and the shadow's results of a mirrored request.
///
/// `keep` runs on the primary path when the primary completes and must be
/// cheap (e.g. clone the response); `compare` runs on the shadow's task once
/// both are known.
pub trait Compare<Primary, Shadowed>: Send + Sync + 'static {
    /// What is kept of the primary's result until the shadow completes.
    type Kept: Send + 'static;

    /// Whether this hook wants the primary's result at all.
    fn wants_primary(&self) -> bool {
        true
    }

    /// Extracts what to keep of the primary's result; `None` skips the comparison.
    fn keep(&self, primary: &Result<Primary, BoxError>) -> Option<Self::Kept>;

    /// Compares the kept primary result with the shadow's result.
    fn compare(&self, primary: Self::Kept, shadow: Result<Shadowed, BoxError>);
}

/// Discards shadow responses (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl<P, S> Compare<P, S> for Discard {
    type Kept = ();

    fn wants_primary(&self) -> bool {
        false
    }

    fn keep(&self, _: &Result<P, BoxError>) -> Option<()> {
        None
    }

    fn compare(&self, _: (), _: Result<S, BoxError>) {}
}

/// A comparison closure receiving a clone of the primary's response (or its
/// error message) and the shadow's result.
#[derive(Clone)]
pub struct CompareFn<F> {
    f: F,
}

impl<F> CompareFn<F> {
    /// Wraps `f(primary, shadow)`.
    pub fn new(f: F) -> Self {
        Self { f }
    }
}

impl<F> fmt::Debug for CompareFn<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompareFn").finish_non_exhaustive()
    }
}

impl<P, S, F> Compare<P, S> for CompareFn<F>
where
    P: Clone + Send + 'static,
    F: Fn(Result<P, String>, Result<S, BoxError>) + Send + Sync + 'static,
{
    type Kept = Result<P, String>;

    fn keep(&self, primary: &Result<P, BoxError>) -> Option<Self::Kept> {
        Some(primary.as_ref().map(Clone::clone).map_err(ToString::to_string))
    }

    fn compare(&self, primary: Self::Kept, shadow: Result<S, BoxError>) {
        (self.f)(primary, shadow)
    }
}
