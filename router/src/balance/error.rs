use std::fmt;

/// No replica became ready within the balancer's `ready_timeout`.
#[derive(Debug, Default)]
pub struct NoReadyReplica {
    _p: (),
}

impl NoReadyReplica {
    pub(crate) fn new() -> Self {
        Self { _p: () }
    }
}

impl fmt::Display for NoReadyReplica {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("no replica became ready in time")
    }
}

impl std::error::Error for NoReadyReplica {}
