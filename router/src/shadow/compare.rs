use std::fmt;

/// Why a shadow request produced no response.
#[derive(Clone, Debug)]
pub struct ShadowError {
    message: String,
    timed_out: bool,
}

impl ShadowError {
    pub(crate) fn failed(message: String) -> Self {
        Self {
            message,
            timed_out: false,
        }
    }

    pub(crate) fn timed_out() -> Self {
        Self {
            message: "shadow request timed out".to_owned(),
            timed_out: true,
        }
    }

    /// Whether the shadow was abandoned after the configured timeout.
    pub fn is_timeout(&self) -> bool {
        self.timed_out
    }
}

impl fmt::Display for ShadowError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ShadowError {}

/// Receives the primary's and the shadow's results of a mirrored request.
///
/// `Primary` is the primary service's `Result<Response, Error>`; `Shadowed`
/// is the shadow service's response. `keep` runs on the primary path when
/// the primary completes and must be cheap (e.g. clone the response);
/// `compare` runs on the shadow's task once both are known.
pub trait Compare<Primary, Shadowed>: Send + Sync + 'static {
    /// What is kept of the primary's result until the shadow completes.
    type Kept: Send + 'static;

    /// Whether this hook wants the primary's result at all.
    fn wants_primary(&self) -> bool {
        true
    }

    /// Extracts what to keep of the primary's result; `None` skips the comparison.
    fn keep(&self, primary: &Primary) -> Option<Self::Kept>;

    /// Compares the kept primary result with the shadow's result.
    fn compare(&self, primary: Self::Kept, shadow: Result<Shadowed, ShadowError>);
}

/// Discards shadow responses (the default).
#[derive(Clone, Copy, Debug, Default)]
pub struct Discard;

impl<P, S> Compare<P, S> for Discard {
    type Kept = ();

    fn wants_primary(&self) -> bool {
        false
    }

    fn keep(&self, _: &P) -> Option<()> {
        None
    }

    fn compare(&self, _: (), _: Result<S, ShadowError>) {}
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

impl<P, E, S, F> Compare<Result<P, E>, S> for CompareFn<F>
where
    P: Clone + Send + 'static,
    E: fmt::Display,
    F: Fn(Result<P, String>, Result<S, ShadowError>) + Send + Sync + 'static,
{
    type Kept = Result<P, String>;

    fn keep(&self, primary: &Result<P, E>) -> Option<Self::Kept> {
        Some(match primary {
            Ok(p) => Ok(p.clone()),
            Err(e) => Err(e.to_string()),
        })
    }

    fn compare(&self, primary: Self::Kept, shadow: Result<S, ShadowError>) {
        (self.f)(primary, shadow)
    }
}
