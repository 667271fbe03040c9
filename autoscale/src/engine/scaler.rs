use std::sync::Arc;

use futures::future::BoxFuture;
use tower::BoxError;

use super::evaluate::ReplicaCounts;

/// Something that can change the number of replicas: the in-process
/// [`ReplicaSet`](crate::ReplicaSet), or an adapter to an orchestrator.
///
/// `scale_to` should start the change and return promptly (replicas that take
/// time to start are reported through [`replicas`](Scaler::replicas) as
/// current but not ready); the driver awaits it before its next tick.
pub trait Scaler: Send + Sync {
    /// The replica counts now.
    fn replicas(&self) -> ReplicaCounts;

    /// Asks for `n` replicas.
    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>>;
}

impl<S: Scaler + ?Sized> Scaler for Arc<S> {
    fn replicas(&self) -> ReplicaCounts {
        (**self).replicas()
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        (**self).scale_to(n)
    }
}

impl<S: Scaler + ?Sized> Scaler for Box<S> {
    fn replicas(&self) -> ReplicaCounts {
        (**self).replicas()
    }

    fn scale_to(&self, n: u32) -> BoxFuture<'_, Result<(), BoxError>> {
        (**self).scale_to(n)
    }
}
