//! Helpers shared by the integration tests.

/// Lets spawned tasks run to their next await point.
pub(crate) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}
