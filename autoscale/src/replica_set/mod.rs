//! An in-process [`Scaler`](crate::Scaler): replicas of a tower service,
//! discoverable by a balancer.

mod discover;
mod error;
mod future;
mod service;
mod set;

pub use self::discover::ReplicaDiscover;
pub use self::error::ReplicaLimit;
pub use self::future::ResponseFuture;
pub use self::service::{Replica, ReplicaId};
pub use self::set::{ReplicaSet, ReplicaSetConfig};
