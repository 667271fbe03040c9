use std::fmt;

/// [`ReplicaSet::scale_to`](crate::Scaler::scale_to) was asked for more
/// replicas than the set's `max_replicas`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLimit {
    pub(crate) requested: u32,
    pub(crate) max: u32,
}

impl fmt::Display for ReplicaLimit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requested {} replicas, the replica set allows at most {}",
            self.requested, self.max
        )
    }
}

impl std::error::Error for ReplicaLimit {}
