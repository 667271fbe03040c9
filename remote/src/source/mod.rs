//! Where endpoints come from: the [`EndpointSource`] trait and its
//! implementations.
//!
//! A source is a stream of [`Change`]s. It starts with the endpoints known
//! at the time (as inserts), then yields every later change. Errors are
//! reports, not the end: a source that loses its backend (an etcd restart, a
//! DNS timeout) yields a [`SourceError`], keeps the endpoints it announced,
//! retries on its own and, once it can read again, yields only what changed
//! meanwhile (re-list and diff through an
//! [`EndpointTable`](crate::EndpointTable)). The stream ends only when the
//! source can never yield again.
//!
//! * [`StaticSource`]: a fixed list, or one changed at run time through a
//!   [`StaticHandle`].
//! * [`etcd`] (feature `etcd`): endpoints registered under a lease in etcd.
//! * [`dns`] (feature `dns`): endpoints from DNS SRV records (headless
//!   Services).

#[cfg(feature = "dns")]
pub mod dns;
#[cfg(feature = "etcd")]
pub mod etcd;
mod static_list;

use std::fmt;

use futures::stream::BoxStream;
use tower::BoxError;

use crate::endpoint::Change;

pub use self::static_list::{StaticHandle, StaticSource};

/// The stream every source turns into.
pub type ChangeStream = BoxStream<'static, Result<Change, SourceError>>;

/// Something that yields the changes to a set of endpoints.
///
/// Implement it for a discovery mechanism (a Kubernetes EndpointSlice
/// watch, a service registry) by returning a stream that follows the rules
/// in the [module docs](self): current endpoints first, then changes;
/// errors reported and recovered from; repeated inserts and removals are
/// harmless. A [`ChangeStream`] is itself a source, so a source chosen at
/// run time is a boxed stream.
pub trait EndpointSource: Send + 'static {
    /// Starts following the endpoints.
    fn changes(self) -> ChangeStream;
}

impl EndpointSource for ChangeStream {
    fn changes(self) -> ChangeStream {
        self
    }
}

/// A source could not read its backend; it goes on trying.
#[derive(Debug)]
pub struct SourceError {
    source: &'static str,
    inner: BoxError,
}

impl SourceError {
    /// An error of the source named `source` (`"etcd"`, `"dns"`, ...).
    pub fn new(source: &'static str, inner: impl Into<BoxError>) -> Self {
        Self {
            source,
            inner: inner.into(),
        }
    }

    /// The name of the source that failed.
    pub fn source_name(&self) -> &'static str {
        self.source
    }
}

impl fmt::Display for SourceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} endpoint source: {}", self.source, self.inner)
    }
}

impl std::error::Error for SourceError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.inner)
    }
}
