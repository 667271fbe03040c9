//! What convoy-kube publishes through `metrics`, read back with
//! metrics-util's debugging recorder over the fake cluster.

mod support;

use convoy_kube::{EndpointSliceSource, KubeScaler, LeaderConfig, LeaderElector};
use convoy_remote::EndpointSource;
use futures::StreamExt;
use metrics::{SharedString, Unit};
use metrics_util::debugging::{DebugValue, DebuggingRecorder};
use metrics_util::CompositeKey;
use support::cluster::{FakeCluster, NAME, NS};
use support::mock_client;
use tokio::time::{Duration, Instant};

type Snapshot = Vec<(CompositeKey, Option<Unit>, Option<SharedString>, DebugValue)>;

/// The value of `name` whose labels include every pair of `labels`, in
/// one snapshot (taking a snapshot resets the recorder's values).
fn value(snapshot: &Snapshot, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    snapshot.iter().find_map(|(key, _, _, v)| {
        let key = key.key();
        let matches = key.name() == name
            && labels
                .iter()
                .all(|(k, want)| key.labels().any(|l| l.key() == *k && l.value() == *want));
        matches.then(|| match v {
            DebugValue::Gauge(g) => g.into_inner(),
            DebugValue::Counter(c) => *c as f64,
            DebugValue::Histogram(_) => panic!("{name} is a histogram"),
        })
    })
}

fn leader(snapshot: &Snapshot) -> Option<f64> {
    value(
        snapshot,
        "convoy_kube_leader",
        &[("lease", "convoy-node-autoscaler")],
    )
}

#[test]
fn leadership_writes_refusals_reachability_and_endpoints_are_published() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    metrics::with_local_recorder(&recorder, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let (client, handle) = mock_client();
            let (cluster, _server) = FakeCluster::start(handle, 2);
            let mut elector = LeaderElector::new(
                client.clone(),
                LeaderConfig::new(NS, "convoy-node-autoscaler", "front-0"),
            )
            .unwrap();
            elector.step().await.unwrap();
            let snap = snapshotter.snapshot().into_vec();
            assert_eq!(leader(&snap), Some(1.0));

            let source = EndpointSliceSource::new(client.clone(), NS, NAME, "1").unwrap();
            let status = source.status();
            let mut changes = source.changes();
            let scaler = KubeScaler::new(client, NS, NAME)
                .unwrap()
                .leader(elector.handle());
            scaler.refresh().await.unwrap();
            scaler.scale(3).await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while status.ready() < 3 {
                assert!(Instant::now() < deadline, "3 ready within a minute");
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
            }
            let snap = snapshotter.snapshot().into_vec();
            let ready = [("service", NAME), ("state", "ready")];
            assert_eq!(value(&snap, "convoy_kube_endpoints", &ready), Some(3.0));
            assert_eq!(
                value(
                    &snap,
                    "convoy_kube_scale_writes_total",
                    &[("deployment", NAME)]
                ),
                Some(1.0)
            );
            assert_eq!(
                value(
                    &snap,
                    "convoy_kube_replicas_desired",
                    &[("deployment", NAME)]
                ),
                Some(3.0)
            );

            cluster.set_down(true);
            scaler.scale(1).await.unwrap_err();
            let snap = snapshotter.snapshot().into_vec();
            let scaler_api = [("component", "scaler"), ("name", NAME)];
            assert_eq!(
                value(&snap, "convoy_kube_api_reachable", &scaler_api),
                Some(0.0)
            );
            assert_eq!(
                value(&snap, "convoy_kube_api_failures_total", &scaler_api),
                Some(1.0)
            );
            assert_eq!(
                value(
                    &snap,
                    "convoy_kube_scale_refused_total",
                    &[("deployment", NAME), ("reason", "unreachable")]
                ),
                Some(1.0)
            );
            cluster.set_down(false);
            cluster.compact();
            scaler.refresh().await.unwrap();
            let deadline = Instant::now() + Duration::from_secs(60);
            while status.relists() == 0 {
                assert!(Instant::now() < deadline, "a re-list within a minute");
                let _ = tokio::time::timeout(Duration::from_secs(1), changes.next()).await;
            }
            let snap = snapshotter.snapshot().into_vec();
            assert_eq!(
                value(&snap, "convoy_kube_api_reachable", &scaler_api),
                Some(1.0)
            );
            assert_eq!(
                value(&snap, "convoy_kube_relists_total", &[("service", NAME)]),
                Some(1.0)
            );

            // The lease lapses without renewal: the gauge follows at the
            // next failed step.
            cluster.set_down(true);
            tokio::time::advance(Duration::from_secs(11)).await;
            elector.step().await.unwrap_err();
            let snap = snapshotter.snapshot().into_vec();
            assert_eq!(leader(&snap), Some(0.0));
        });
    });
}
