//! How a caller routes one request ([`Route`]: a pinned version, a sticky
//! key, its own deadline) and the errors of the route itself.

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;

/// How one request is routed through a deployment: the same on v1, v2
/// REST and v2 gRPC.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Route {
    /// The version it must run on (v1: `x-convoy-version`; v2: the URL's
    /// or the gRPC request's version); none: the split chooses.
    pub pinned: Option<String>,
    /// Requests with equal keys stay on one version while the weights
    /// stay.
    pub sticky: Option<u64>,
    /// The caller's own deadline (v2: `grpc-timeout` or Triton's `timeout`
    /// parameter), if any; the server's request timeout applies besides,
    /// whichever ends first.
    pub deadline: Option<Instant>,
}

impl Route {
    /// No pin, no sticky key, no deadline of the caller's.
    pub fn new() -> Self {
        Self::default()
    }

    /// Pinned to `version` (none: the split chooses).
    pub fn pinned(mut self, version: Option<String>) -> Self {
        self.pinned = version;
        self
    }

    /// With the caller's deadline, if it has one.
    pub fn deadline(mut self, deadline: Option<Instant>) -> Self {
        self.deadline = deadline;
        self
    }

    /// With a sticky key.
    pub fn sticky(mut self, key: Option<u64>) -> Self {
        self.sticky = key;
        self
    }
}

/// A request pinned to a version the deployment does not serve: the
/// caller's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoSuchVersion {
    /// The deployment.
    pub deployment: String,
    /// The version asked for.
    pub version: String,
}

impl fmt::Display for NoSuchVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "model {:?} has no version {:?}",
            self.deployment, self.version
        )
    }
}

impl std::error::Error for NoSuchVersion {}

/// A request not answered in time: within the server's request timeout,
/// or within the caller's deadline when that came first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimedOut {
    /// The time it had.
    pub limit: Duration,
    /// Whether the caller's deadline (not the server's timeout) ended it.
    pub by_caller: bool,
}

impl fmt::Display for TimedOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.by_caller {
            write!(
                f,
                "not answered within the request's deadline ({:?})",
                self.limit
            )
        } else {
            write!(
                f,
                "not answered within the request timeout ({:?})",
                self.limit
            )
        }
    }
}

impl std::error::Error for TimedOut {}
