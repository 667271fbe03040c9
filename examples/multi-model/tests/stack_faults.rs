//! Fault injection across the crate stack: a `Balancer` over a `ReplicaSet`
//! of batchers whose model runs under a GPU-pool tenant (host backend), the
//! pieces a deployment of this server is built from (`deploy`), here with
//! models that fail on purpose. One test per fault, each checking its
//! expected outcome and that every caller gets exactly one answer (no
//! caller hangs, the model sees an item at most once).
//!
//! Design choices the tests pin down:
//! - a hung model would keep its batch's lease (compute slot, stream and
//!   memory) forever, because the batcher cannot cancel a running batch; the
//!   model call is therefore wrapped in a timeout, and dropping the timed-out
//!   future returns the lease and the memory;
//! - an allocation may synchronize a stream (to reclaim memory freed on it),
//!   which blocks; the model allocates on tokio's blocking pool so a stalled
//!   stream of one tenant never blocks the runtime that serves the others;
//! - the stack does not retry: a request in flight on a replica that dies
//!   gets `Closed`, and the balancer stops routing to that replica.

use std::collections::HashMap;
use std::future::{pending, ready};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use convoy_autoscale::{ReplicaSet, ReplicaSetConfig, Scaler};
use convoy_batcher::{
    batch_fn, Batch, BatchConfig, BatchFailed, BatchLayer, BatchPanicked, Closed, DeadlineExceeded,
};
use convoy_gpu_pool::{
    DeviceOutOfMemory, GpuPool, HostBackend, HostConfig, PoolConfig, QuotaExceeded, Share, Tenant,
};
use convoy_router::balance::{BalanceConfig, LoadMetric};
use convoy_router::shadow::ShadowConfig;
use convoy_router::{Balancer, ShadowLayer};
use parking_lot::Mutex;
use tokio::time::{sleep, timeout, Instant};
use tower::{service_fn, BoxError, Layer, Service, ServiceExt};

const MIB: u64 = 1 << 20;
/// Model time of one batch.
const MODEL_TIME: Duration = Duration::from_millis(10);
/// The longest a model call may run before it is abandoned.
const MODEL_TIMEOUT: Duration = Duration::from_millis(500);
/// A request that makes the model panic.
const POISON: u64 = 6666;
/// A request that makes the model hang.
const HANG: u64 = 7777;
/// A request that makes the model answer one result short.
const SHORT: u64 = 8888;

/// Whether `e` or one of its sources is an `E`.
fn caused_by<E: std::error::Error + 'static>(e: &BoxError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
    while let Some(err) = cur {
        if err.is::<E>() {
            return true;
        }
        cur = err.source();
    }
    false
}

/// Items the model saw, with how many times each.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<HashMap<u64, u32>>>);

impl Seen {
    fn record(&self, batch: &[u64]) {
        let mut seen = self.0.lock();
        for &x in batch {
            *seen.entry(x).or_default() += 1;
        }
    }

    /// The items seen, sorted; panics if one was seen twice.
    fn once_each(&self) -> Vec<u64> {
        let seen = self.0.lock();
        assert!(
            seen.values().all(|&n| n == 1),
            "the model saw an item twice: {seen:?}"
        );
        let mut items: Vec<u64> = seen.keys().copied().collect();
        items.sort_unstable();
        items
    }
}

fn config(max_batch: usize) -> BatchConfig {
    BatchConfig::builder()
        .name("faults")
        .max_batch_size(max_batch)
        .max_wait(Duration::from_millis(20))
        .queue_capacity(64)
        .build()
        .unwrap()
}

/// A balancer over `n` replicas made by `make`.
async fn balanced<F>(n: u32, make: F) -> (ReplicaSet<Batch<u64, u64>>, Balancer<u64, u64>)
where
    F: Fn() -> Batch<u64, u64> + Send + Sync + 'static,
{
    let set = ReplicaSet::new(ReplicaSetConfig::default().max_replicas(n), move || {
        ready(Ok::<_, BoxError>(make()))
    })
    .unwrap();
    set.scale_to(n).await.unwrap();
    let config = BalanceConfig {
        load: LoadMetric::PendingRequests,
        ..BalanceConfig::default()
    };
    let balancer = Balancer::new(set.discover(), config).unwrap();
    // Let the balancer discover the replicas.
    sleep(Duration::from_millis(1)).await;
    (set, balancer)
}

/// Sends every request at once; the answers in request order, exactly one
/// per request.
async fn call_all<S>(svc: &S, requests: &[u64]) -> Vec<Result<u64, BoxError>>
where
    S: Service<u64, Response = u64, Error = BoxError> + Clone + Send + 'static,
    S::Future: Send,
{
    let mut tasks = tokio::task::JoinSet::new();
    for (i, &x) in requests.iter().enumerate() {
        let svc = svc.clone();
        tasks.spawn(async move { (i, svc.oneshot(x).await) });
    }
    let mut answers: Vec<Option<Result<u64, BoxError>>> = requests.iter().map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, answer) = joined.expect("no caller panics");
        assert!(answers[i].replace(answer).is_none(), "answered twice");
    }
    answers
        .into_iter()
        .map(|a| a.expect("every caller is answered"))
        .collect()
}

fn host_pool(capacity: u64, slots: u32) -> (GpuPool, HostBackend) {
    let host = HostBackend::new(HostConfig::with_capacity(capacity));
    let cfg = PoolConfig::default().headroom(1.0).compute_slots(slots);
    let pool = GpuPool::from_arc(Arc::new(host.clone()), cfg, None).unwrap();
    (pool, host)
}

/// A replica whose model runs each batch under `tenant`: a lease, then
/// `request` MiB of activations per item (1 MiB for the markers) (allocated on the blocking pool),
/// then [`MODEL_TIME`]; a [`HANG`] item hangs. The whole call is abandoned
/// after [`MODEL_TIMEOUT`], which returns the lease and the memory.
fn tenant_model(tenant: Tenant, seen: Seen) -> Batch<u64, u64> {
    tenant_model_with(config(4), tenant, seen)
}

fn tenant_model_with(config: BatchConfig, tenant: Tenant, seen: Seen) -> Batch<u64, u64> {
    batch_fn(config, move |batch: Vec<u64>| {
        let (tenant, seen) = (tenant.clone(), seen.clone());
        let run = async move {
            seen.record(&batch);
            let lease = tenant.lease().await?;
            let bytes = batch
                .iter()
                .map(|&x| if x < 1024 { x } else { 1 })
                .sum::<u64>()
                * MIB;
            let (t, stream) = (tenant.clone(), lease.stream());
            let _activations =
                tokio::task::spawn_blocking(move || t.alloc_on(stream, bytes)).await??;
            if batch.contains(&HANG) {
                pending::<()>().await;
            }
            sleep(MODEL_TIME).await;
            Ok::<_, BoxError>(batch)
        };
        async move { timeout(MODEL_TIMEOUT, run).await? }
    })
}

// 1. The model panics mid-batch.
#[tokio::test(start_paused = true)]
async fn a_model_panic_fails_only_its_batch_and_the_replica_keeps_serving() {
    let seen = Seen::default();
    let model_seen = seen.clone();
    let (_set, svc) = balanced(1, move || {
        let seen = model_seen.clone();
        batch_fn(config(4), move |batch: Vec<u64>| {
            let seen = seen.clone();
            async move {
                seen.record(&batch);
                sleep(MODEL_TIME / 2).await;
                assert!(!batch.contains(&POISON), "the model crashed");
                sleep(MODEL_TIME / 2).await;
                Ok::<_, BoxError>(batch)
            }
        })
    })
    .await;
    // The poisoned request and the three that shared its batch.
    for answer in call_all(&svc, &[1, 2, POISON, 3]).await {
        let err = answer.unwrap_err();
        assert!(caused_by::<BatchPanicked>(&err), "{err}");
    }
    // The replica serves the next batches.
    let answers = call_all(&svc, &[4, 5, 6, 7, 8]).await;
    let ok: Vec<u64> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(ok, [4, 5, 6, 7, 8]);
    assert_eq!(seen.once_each(), [1, 2, 3, 4, 5, 6, 7, 8, POISON]);
}

// 2. The model hangs.
#[tokio::test(start_paused = true)]
async fn a_hung_model_times_out_and_gives_back_its_slot_and_memory() {
    let (pool, _host) = host_pool(256 * MIB, 1);
    let tenant = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let seen = Seen::default();
    let (t, s) = (tenant.clone(), seen.clone());
    let (_set, svc) = balanced(1, move || tenant_model(t.clone(), s.clone())).await;

    // The caller's deadline fires first: it gets exactly one answer, a
    // timeout, while the hung batch still holds the lease.
    let caller_deadline = Duration::from_millis(100);
    let started = Instant::now();
    let answer = timeout(caller_deadline, svc.clone().oneshot(HANG)).await;
    assert!(answer.is_err(), "the caller's deadline fired");
    assert_eq!(started.elapsed(), caller_deadline);
    assert_eq!(
        pool.free_compute_slots(),
        0,
        "the hung batch holds the slot"
    );
    assert_eq!(tenant.used(), MIB, "and its activations");

    // A caller queued behind the hung batch gives up at its deadline too;
    // its request is cancelled and never reaches the model.
    let queued = timeout(caller_deadline, svc.clone().oneshot(5)).await;
    assert!(queued.is_err());

    // At the model timeout the hung call is dropped: slot and memory return.
    sleep(MODEL_TIMEOUT).await;
    assert_eq!(pool.free_compute_slots(), 1);
    assert_eq!(tenant.used(), 0);
    // Another request gets the slot.
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);
    assert_eq!(tenant.used(), 0);
    assert_eq!(pool.free_compute_slots(), 1);
    // The abandoned caller's request was cancelled before dispatch.
    assert_eq!(seen.once_each(), [2, HANG]);
}

// 2b. A queued request's own deadline fires while the model hangs.
#[tokio::test(start_paused = true)]
async fn a_queued_request_behind_a_hung_batch_gets_deadline_exceeded() {
    let (pool, _host) = host_pool(256 * MIB, 1);
    let tenant = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let seen = Seen::default();
    let cfg = BatchConfig::builder()
        .max_batch_size(1)
        .queue_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    // The same model, behind a batcher with a 50 ms queue timeout.
    let svc = tenant_model_with(cfg, tenant.clone(), seen.clone());
    let hung = tokio::spawn(svc.clone().oneshot(HANG));
    sleep(Duration::from_millis(1)).await;
    let err = svc.clone().oneshot(3).await.unwrap_err();
    assert!(caused_by::<DeadlineExceeded>(&err), "{err}");
    // The hung request itself fails at the model timeout.
    let err = hung.await.unwrap().unwrap_err();
    assert!(caused_by::<BatchFailed>(&err), "{err}");
    assert_eq!((tenant.used(), pool.free_compute_slots()), (0, 1));
    assert_eq!(seen.once_each(), [HANG]);
}

// 3. The model answers a batch with the wrong number of results.
#[tokio::test(start_paused = true)]
async fn a_wrong_length_answer_fails_its_batch_and_the_next_batch_is_fine() {
    let (_set, svc) = balanced(1, || {
        batch_fn(config(4), |batch: Vec<u64>| async move {
            sleep(MODEL_TIME).await;
            let skip = usize::from(batch.contains(&SHORT));
            Ok::<_, BoxError>(batch[skip..].to_vec())
        })
    })
    .await;
    for answer in call_all(&svc, &[1, SHORT, 2, 3]).await {
        let err = answer.unwrap_err();
        assert!(caused_by::<BatchFailed>(&err), "{err}");
        assert!(err.to_string().contains("3 results for 4 items"), "{err}");
    }
    let ok: Vec<u64> = call_all(&svc, &[4, 5, 6, 7])
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(ok, [4, 5, 6, 7]);
}

// 4. A replica dies with requests in flight.
#[tokio::test(start_paused = true)]
async fn a_dying_replica_fails_its_requests_with_closed_and_leaves_the_rotation() {
    let workers: Arc<Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
    let next = Arc::new(AtomicU64::new(0));
    let w = Arc::clone(&workers);
    let (set, svc) = balanced(2, move || {
        let id = next.fetch_add(1, Ordering::Relaxed);
        let model = service_fn(move |batch: Vec<u64>| async move {
            sleep(Duration::from_millis(50)).await;
            Ok::<_, BoxError>(vec![id; batch.len()])
        });
        let (replica, worker) = BatchLayer::new(config(16)).pair(model);
        w.lock().push(tokio::spawn(worker).abort_handle());
        replica
    })
    .await;
    assert_eq!(set.ready_ids().len(), 2);

    // Eight requests spread over both replicas; replica 0 dies mid-batch.
    let inflight = {
        let svc = svc.clone();
        tokio::spawn(async move { call_all(&svc, &[0; 8]).await })
    };
    sleep(Duration::from_millis(10)).await;
    workers.lock()[0].abort();
    let answers = inflight.await.unwrap();
    let closed = answers
        .iter()
        .filter(|a| a.as_ref().is_err_and(caused_by::<Closed>))
        .count();
    let served = answers.iter().filter(|a| matches!(a, Ok(1))).count();
    assert_eq!(closed + served, 8, "only Closed or replica 1: {answers:?}");
    assert!(closed > 0, "some requests were on the dead replica");
    assert!(served > 0, "some requests were on the live replica");

    // The balancer stops routing to the dead replica: a queue slot the dead
    // replica granted before it died reports `Closed` at the next
    // `poll_ready` (convoy-batcher never reports a closed batcher ready),
    // which evicts the replica before any call reaches it.
    let mut late_closed = 0;
    for _ in 0..20 {
        match svc.clone().oneshot(0).await {
            Ok(id) => assert_eq!(id, 1),
            Err(e) if caused_by::<Closed>(&e) => late_closed += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert_eq!(
        late_closed, 0,
        "{late_closed} calls reached the dead replica"
    );
    for answer in call_all(&svc, &[0; 20]).await {
        assert_eq!(answer.unwrap(), 1);
    }
    println!("replica death: {closed} in flight got Closed, {served} served, {late_closed} later call(s) got Closed");
}

// 5. A tenant hits its GPU memory quota.
#[tokio::test(start_paused = true)]
async fn a_tenant_over_its_quota_gets_quota_exceeded_and_the_other_is_unaffected() {
    let (pool, _host) = host_pool(256 * MIB, 2);
    let a = pool.tenant("a", Share::bytes(8 * MIB)).unwrap();
    let b = pool.tenant("b", Share::bytes(8 * MIB)).unwrap();
    let seen = Seen::default();
    let (ta, tb, s1, s2) = (a.clone(), b.clone(), seen.clone(), seen.clone());
    let (_sa, va) = balanced(1, move || tenant_model(ta.clone(), s1.clone())).await;
    let (_sb, vb) = balanced(1, move || tenant_model(tb.clone(), s2.clone())).await;

    // a asks for 16 MiB while b runs next to it.
    let (over, fine) = tokio::join!(call_all(&va, &[16]), call_all(&vb, &[2, 3]));
    let err = over.into_iter().next().unwrap().unwrap_err();
    assert!(caused_by::<QuotaExceeded>(&err), "{err}");
    let fine: Vec<u64> = fine.into_iter().map(Result::unwrap).collect();
    assert_eq!(fine, [2, 3]);
    // a's next batch, within quota, runs.
    assert_eq!(va.clone().oneshot(5).await.unwrap(), 5);
    assert_eq!((a.used(), b.used()), (0, 0));
    assert_eq!(a.stats().quota_rejections, 1);
    assert_eq!(b.stats().quota_rejections, 0);
}

// 6a. The device reports out of memory.
#[tokio::test(start_paused = true)]
async fn device_oom_is_a_typed_error_for_that_batch_only() {
    let (pool, host) = host_pool(256 * MIB, 2);
    let a = pool.tenant("a", Share::fraction(0.4)).unwrap();
    let b = pool.tenant("b", Share::fraction(0.4)).unwrap();
    let seen = Seen::default();
    let (ta, tb, s1, s2) = (a.clone(), b.clone(), seen.clone(), seen.clone());
    let (_sa, va) = balanced(1, move || tenant_model(ta.clone(), s1.clone())).await;
    let (_sb, vb) = balanced(1, move || tenant_model(tb.clone(), s2.clone())).await;

    // The chunk allocation and its retry after trimming both fail.
    host.fail_next_chunk_allocs(2);
    let err = va.clone().oneshot(2).await.unwrap_err();
    assert!(caused_by::<DeviceOutOfMemory>(&err), "{err}");
    assert_eq!(vb.clone().oneshot(3).await.unwrap(), 3);
    assert_eq!(va.clone().oneshot(4).await.unwrap(), 4);
    assert_eq!((a.used(), b.used()), (0, 0));
    assert_eq!(a.stats().out_of_memory, 1);
    assert_eq!(seen.once_each(), [2, 3, 4]);
}

// 6b. A tenant's stream stalls (a long kernel) while it needs memory.
// Real time: a stalled stream blocks a thread, which paused time cannot
// model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_of_one_tenant_does_not_block_the_other_tenant() {
    let (pool, host) = host_pool(256 * MIB, 2);
    let a = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let b = pool.tenant("b", Share::fraction(0.25)).unwrap();
    let sa = a.streams()[0];
    let seen = Seen::default();
    let (ta, tb, s1, s2) = (a.clone(), b.clone(), seen.clone(), seen.clone());
    let (_sa, va) = balanced(1, move || tenant_model(ta.clone(), s1.clone())).await;
    let (_sb, vb) = balanced(1, move || tenant_model(tb.clone(), s2.clone())).await;
    // b has a warm chunk.
    drop(b.alloc(MIB).unwrap());

    // a frees memory while a kernel runs on its stalled stream, then needs
    // a new chunk that only that memory can provide: its allocation waits
    // for the stream.
    let freed = a.alloc(4 * MIB).unwrap();
    host.stall(sa).unwrap();
    host.launch(sa, || {}).unwrap();
    drop(freed);
    host.fail_next_chunk_allocs(1);
    let stalled = tokio::spawn(va.clone().oneshot(40));
    let h = host.clone();
    let blocked =
        tokio::task::spawn_blocking(move || h.wait_for_blocked_sync(sa, Duration::from_secs(10)));
    assert!(blocked.await.unwrap(), "a's allocation waits on its stream");

    // b is served meanwhile.
    let answer = timeout(Duration::from_secs(5), vb.clone().oneshot(1)).await;
    assert_eq!(answer.expect("b was not blocked").unwrap(), 1);
    assert!(!stalled.is_finished());

    // The kernel ends: a's request completes.
    host.release(sa).unwrap();
    assert_eq!(stalled.await.unwrap().unwrap(), 40);
    assert_eq!((a.used(), b.used()), (0, 0));
    assert_eq!(seen.once_each(), [1, 40]);
}

// 7. The shadow backend is down or slow.
#[tokio::test(start_paused = true)]
async fn a_down_or_slow_shadow_does_not_change_the_primarys_answers_or_latency() {
    let primary = || {
        batch_fn(config(4), |batch: Vec<u64>| async move {
            sleep(MODEL_TIME).await;
            Ok::<_, BoxError>(batch.into_iter().map(|x| x * 2).collect::<Vec<u64>>())
        })
    };
    let shadow_config = ShadowConfig {
        max_in_flight: 4,
        timeout: Duration::from_secs(1),
        ..ShadowConfig::default()
    };
    // Latency of the primary alone.
    let alone = primary();
    let t = Instant::now();
    assert_eq!(alone.oneshot(1).await.unwrap(), 2);
    let baseline = t.elapsed();

    let down = service_fn(|_: u64| async { Err::<u64, BoxError>("shadow is down".into()) });
    let slow = service_fn(|x: u64| async move {
        sleep(Duration::from_secs(10)).await;
        Ok::<u64, BoxError>(x)
    });
    let down = ShadowLayer::new(down, shadow_config.clone()).unwrap();
    let slow = ShadowLayer::new(slow, shadow_config).unwrap();
    let (with_down, with_slow) = (down.layer(primary()), slow.layer(primary()));
    for x in 0..10 {
        let t = Instant::now();
        assert_eq!(with_down.clone().oneshot(x).await.unwrap(), 2 * x);
        assert_eq!(t.elapsed(), baseline);
        let t = Instant::now();
        assert_eq!(with_slow.clone().oneshot(x).await.unwrap(), 2 * x);
        assert_eq!(t.elapsed(), baseline);
    }
    sleep(Duration::from_secs(2)).await;
    let (d, s) = (down.stats(), slow.stats());
    assert_eq!((d.mirrored, d.failed), (10, 10));
    // The slow shadow runs 4 at a time; the rest are dropped, the running
    // ones abandoned at its timeout.
    assert_eq!(s.mirrored + s.dropped, 10);
    assert_eq!(s.timed_out, s.mirrored);
}

// 8. Shutdown with work queued.
#[tokio::test(start_paused = true)]
async fn closing_drains_everything_queued_and_refuses_new_calls() {
    let seen = Seen::default();
    let s = seen.clone();
    let svc = batch_fn(config(4), move |batch: Vec<u64>| {
        let seen = s.clone();
        async move {
            seen.record(&batch);
            sleep(MODEL_TIME).await;
            Ok::<_, BoxError>(batch)
        }
    });
    let requests: Vec<u64> = (0..20).collect();
    let queued = {
        let svc = svc.clone();
        let requests = requests.clone();
        tokio::spawn(async move { call_all(&svc, &requests).await })
    };
    sleep(Duration::from_millis(1)).await;
    assert!(
        svc.handle().stats().queue_depth > 0,
        "work is queued at close"
    );
    svc.handle().close();
    let err = svc.clone().oneshot(99).await.unwrap_err();
    assert!(caused_by::<Closed>(&err), "{err}");
    let answers: Vec<u64> = queued
        .await
        .unwrap()
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(answers, requests);
    assert_eq!(seen.once_each(), requests);
}

// 9. Clients disconnect mid-request.
#[tokio::test(start_paused = true)]
async fn a_disconnected_request_is_cancelled_before_dispatch_and_nothing_leaks() {
    let metrics = tokio::runtime::Handle::current().metrics();
    let (pool, _host) = host_pool(256 * MIB, 1);
    let tenant = pool.tenant("a", Share::fraction(0.5)).unwrap();
    let seen = Seen::default();
    let (t, s) = (tenant.clone(), seen.clone());
    let (_set, svc) = balanced(1, move || tenant_model(t.clone(), s.clone())).await;
    let tasks_before = metrics.num_alive_tasks();

    // One request keeps the replica busy (dispatched after `max_wait`).
    let busy = tokio::spawn(svc.clone().oneshot(1));
    sleep(Duration::from_millis(21)).await;
    assert_eq!(seen.once_each(), [1], "the busy batch is running");
    // Five callers drop their response future; five tasks are aborted (a
    // client connection closing), all before their requests are dispatched.
    for x in 10..15 {
        let mut svc = svc.clone();
        let future = svc.ready().await.unwrap().call(x);
        drop(future);
    }
    let aborted: Vec<_> = (20..25)
        .map(|x| tokio::spawn(svc.clone().oneshot(x)))
        .collect();
    sleep(Duration::from_millis(1)).await;
    for task in &aborted {
        task.abort();
    }
    for task in aborted {
        assert!(task.await.unwrap_err().is_cancelled());
    }
    assert_eq!(busy.await.unwrap().unwrap(), 1);
    assert_eq!(svc.clone().oneshot(2).await.unwrap(), 2);

    // The batch service never saw the cancelled requests.
    assert_eq!(seen.once_each(), [1, 2]);
    sleep(Duration::from_millis(100)).await;
    assert_eq!(metrics.num_alive_tasks(), tasks_before, "a task leaked");
    assert_eq!(tenant.used(), 0);
    assert_eq!(pool.free_compute_slots(), 1);
}
