//! GpuShareLayer: slot in poll_ready, lease on the request, release when
//! the response completes or is dropped.

use convoy_gpu_pool::{GpuPool, GpuShareLayer, HostBackend, Lease, Leased, PoolConfig, Share};
use tokio_test::{assert_pending, assert_ready, assert_ready_ok};
use tower::{Layer, Service, ServiceExt};
use tower_test::mock;

fn pool(slots: u32) -> GpuPool {
    GpuPool::new(
        HostBackend::default(),
        PoolConfig::default().compute_slots(slots),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn slot_taken_in_poll_ready_released_on_completion() {
    let pool = pool(1);
    let t = pool
        .tenant("bert", Share::fraction(0.5).streams(2))
        .unwrap();
    let (inner, mut handle) = mock::pair::<Leased<Vec<u32>>, usize>();
    let mut other = mock::Spawn::new(GpuShareLayer::new(t.clone()).layer(inner.clone()));
    let mut svc = mock::Spawn::new(GpuShareLayer::new(t.clone()).layer(inner));

    handle.allow(10);
    assert_ready_ok!(svc.poll_ready());
    assert_eq!(pool.free_compute_slots(), 0);
    // A second service of the same tenant sees backpressure: no free slot.
    assert_pending!(other.poll_ready());

    let fut = svc.call(Leased::new(vec![1, 2, 3]));
    let mut fut = tokio_test::task::spawn(fut);
    assert_pending!(fut.poll());
    let (req, send) = handle.next_request().await.unwrap();
    let lease: &Lease = req.lease().expect("lease attached");
    assert_eq!(lease.tenant(), "bert");
    assert!(t.streams().contains(&lease.stream()));
    assert_eq!(req.request, vec![1, 2, 3]);
    assert_eq!(pool.free_compute_slots(), 0, "held while the batch runs");
    send.send_response(3);
    assert_eq!(assert_ready_ok!(fut.poll()), 3);
    // Released on completion; the waiting service gets it.
    assert!(other.is_woken());
    assert_ready_ok!(other.poll_ready());
    assert_eq!(pool.free_compute_slots(), 0);
    drop(other);
    assert_eq!(
        pool.free_compute_slots(),
        1,
        "an unused reservation is returned on drop"
    );
}

#[tokio::test(start_paused = true)]
async fn dropping_the_response_future_releases_the_slot() {
    let pool = pool(1);
    let t = pool.tenant("t", Share::fraction(0.5)).unwrap();
    let (inner, mut handle) = mock::pair::<Leased<u8>, u8>();
    let mut svc = GpuShareLayer::new(t).layer(inner);
    handle.allow(1);
    svc.ready().await.unwrap();
    let fut = svc.call(Leased::new(7));
    assert_eq!(pool.free_compute_slots(), 0);
    drop(fut);
    assert_eq!(pool.free_compute_slots(), 1);
}

#[tokio::test(start_paused = true)]
async fn clones_do_not_copy_the_reservation() {
    let pool = pool(2);
    let t = pool.tenant("t", Share::fraction(0.5)).unwrap();
    let (inner, mut handle) = mock::pair::<Leased<u8>, u8>();
    handle.allow(5);
    let mut svc = GpuShareLayer::new(t).layer(inner);
    svc.ready().await.unwrap();
    let clone = svc.clone();
    assert_eq!(
        pool.free_compute_slots(),
        1,
        "only the original holds a slot"
    );
    drop(clone);
    drop(svc);
    assert_eq!(pool.free_compute_slots(), 2);
}

#[tokio::test(start_paused = true)]
async fn inner_errors_pass_through_and_release() {
    let pool = pool(1);
    let t = pool.tenant("t", Share::fraction(0.5)).unwrap();
    let (inner, mut handle) = mock::pair::<Leased<u8>, u8>();
    let mut svc = mock::Spawn::new(GpuShareLayer::new(t).layer(inner));
    handle.allow(1);
    assert_ready_ok!(svc.poll_ready());
    let mut fut = tokio_test::task::spawn(svc.call(Leased::new(1)));
    let (_, send) = handle.next_request().await.unwrap();
    send.send_error("model failed");
    let err = assert_ready!(fut.poll()).unwrap_err();
    assert_eq!(err.to_string(), "model failed");
    assert_eq!(pool.free_compute_slots(), 1);
}

#[cfg(feature = "http")]
#[tokio::test(start_paused = true)]
async fn http_requests_carry_the_lease_as_an_extension() {
    let pool = pool(1);
    let t = pool.tenant("yolo", Share::fraction(0.5)).unwrap();
    let svc = tower::service_fn(|req: http::Request<()>| async move {
        let lease = req.extensions().get::<Lease>().cloned();
        Ok::<_, tower::BoxError>(lease.map(|l| l.tenant().to_owned()))
    });
    let svc = GpuShareLayer::new(t).layer(svc);
    let out = svc.oneshot(http::Request::new(())).await.unwrap();
    assert_eq!(out.as_deref(), Some("yolo"));
    assert_eq!(pool.free_compute_slots(), 1);
}
