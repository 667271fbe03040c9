//! A front's view: convoy-remote's `Pool` (one convoy-router balancer per
//! version) fed by the EndpointSliceSource, against the fake cluster, under
//! load through a scale-down: no request reaches a pod that is gone, none
//! is lost, and afterwards only the kept pods serve.

mod support;

use std::collections::BTreeMap;
use std::sync::Arc;

use convoy_kube::{EndpointSliceSource, KubeScaler, PodLoadSnapshot};
use convoy_remote::{Endpoint, Pool, PoolConfig};
use convoy_router::balance::BalanceConfig;
use parking_lot::Mutex;
use support::cluster::{FakeCluster, NAME, NS};
use support::mock_client;
use tokio::time::{Duration, Instant};
use tower::{service_fn, BoxError, ServiceExt};

#[tokio::test(start_paused = true)]
async fn a_planned_scale_down_under_load_loses_no_request() {
    let (client, handle) = mock_client();
    let (cluster, _server) = FakeCluster::start(handle, 4);

    // Each node answers with its pod name after 40 ms, and refuses (as a
    // closed port would) once its pod is gone.
    let nodes = cluster.clone();
    let connect = move |e: &Endpoint| {
        let (id, nodes) = (e.id.clone(), nodes.clone());
        service_fn(move |_: u32| {
            let (id, nodes) = (id.clone(), nodes.clone());
            async move {
                if !nodes.has_pod(&id) {
                    return Err::<String, BoxError>(format!("{id}: connection refused").into());
                }
                tokio::time::sleep(Duration::from_millis(40)).await;
                if !nodes.has_pod(&id) {
                    return Err(format!("{id}: reset mid-request").into());
                }
                Ok(id)
            }
        })
    };
    let probe = |_: &Endpoint| async { true };
    let source = EndpointSliceSource::new(client.clone(), NS, NAME, "1").unwrap();
    let status = source.status();
    let pool = Pool::new(source, connect, probe, PoolConfig::default()).unwrap();
    let balancer = pool.balancer::<u32>("1", BalanceConfig::default()).unwrap();

    let scaler = KubeScaler::new(client, NS, NAME)
        .unwrap()
        .pod_load(|| PodLoadSnapshot {
            taken_at: Instant::now(),
            per_pod: [(format!("{NAME}-1"), 5.0), (format!("{NAME}-3"), 5.0)]
                .into_iter()
                .collect(),
        });
    scaler.refresh().await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while status.ready() < 4 {
        assert!(Instant::now() < deadline, "4 ready endpoints within 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 600 requests, one every 10 ms; the scale-down to 2 at request 150.
    let answers = Arc::new(Mutex::new(Vec::new()));
    let mut sent = Vec::new();
    for i in 0..600u32 {
        if i == 150 {
            scaler.scale(2).await.unwrap();
        }
        let (balancer, answers) = (balancer.clone(), answers.clone());
        sent.push(tokio::spawn(async move {
            let answer = balancer.oneshot(i).await.map_err(|e| e.to_string());
            answers.lock().push((i, answer));
        }));
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    for task in sent {
        task.await.unwrap();
    }

    let answers = answers.lock();
    let failed: Vec<_> = answers.iter().filter(|(_, a)| a.is_err()).collect();
    assert!(
        failed.is_empty(),
        "{} of 600 failed: {:?}",
        failed.len(),
        &failed[..failed.len().min(5)]
    );
    let mut by_pod: BTreeMap<&str, usize> = BTreeMap::new();
    for (_, a) in answers.iter() {
        *by_pod.entry(a.as_deref().unwrap()).or_default() += 1;
    }
    assert_eq!(
        by_pod.len(),
        4,
        "all four served before the scale-down: {by_pod:?}"
    );
    // The last 300 (from 3 s after the scale-down on) went to the kept pods.
    let late: BTreeMap<&str, usize> =
        answers
            .iter()
            .filter(|(i, _)| *i >= 300)
            .fold(BTreeMap::new(), |mut m, (_, a)| {
                *m.entry(a.as_deref().unwrap()).or_default() += 1;
                m
            });
    let kept: Vec<&str> = late.keys().copied().collect();
    assert_eq!(
        kept,
        vec![format!("{NAME}-1"), format!("{NAME}-3")],
        "{late:?}"
    );
    assert_eq!(
        cluster.live_pods(),
        vec![format!("{NAME}-1"), format!("{NAME}-3")]
    );
}
