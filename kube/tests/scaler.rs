//! KubeScaler against recorded API-server answers over `tower_test::mock`.

mod support;

use std::collections::HashMap;
use std::sync::Arc;

use convoy_autoscale::{ReplicaCounts, Scaler};
use convoy_kube::{ErrorKind, KubeScaler, PodLoadSnapshot, POD_DELETION_COST};
use serde_json::json;
use support::{down, json, mock_client, replay, Reply};
use tokio::time::{Duration, Instant};

const SCALE: &str = "/apis/apps/v1/namespaces/convoy/deployments/convoy-node/scale";
const PODS: &str = "/api/v1/namespaces/convoy/pods";

fn pod(name: &str) -> String {
    format!("{PODS}/convoy-node-7d9f-{name}")
}

fn loads(pairs: &[(&str, f64)]) -> HashMap<String, f64> {
    pairs
        .iter()
        .map(|(n, l)| (format!("convoy-node-7d9f-{n}"), *l))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn scale_up_patches_spec_replicas_under_the_read_resource_version() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            json("PATCH", SCALE, 200, "scale_7.json"),
        ],
    );
    let scaler = KubeScaler::new(client, "convoy", "convoy-node").unwrap();
    assert_eq!(
        scaler.replicas(),
        ReplicaCounts::ready(0),
        "nothing read yet"
    );

    let outcome = scaler.scale(7).await.unwrap();
    assert_eq!((outcome.from, outcome.to), (5, 7));
    assert!(outcome.marked.is_empty(), "a scale-up marks no pod");

    let seen = server.await.unwrap();
    let patch = &seen[1];
    assert_eq!(
        patch.content_type.as_deref(),
        Some("application/merge-patch+json")
    );
    assert_eq!(
        patch.body,
        json!({ "spec": { "replicas": 7 }, "metadata": { "resourceVersion": "1001" } })
    );
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(7));
    assert_eq!(
        scaler.snapshot().unwrap().resource_version.as_deref(),
        Some("1003")
    );
}

#[tokio::test(start_paused = true)]
async fn scale_down_marks_the_least_loaded_pods_and_clears_old_marks() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            // What the decision saw, then the fresh read before writing.
            json("GET", SCALE, 200, "scale_5.json"),
            json("GET", SCALE, 200, "scale_5.json"),
            json("GET", PODS, 200, "pods.json"),
            // Least loaded first: c (0.5), then e (1).
            json("PATCH", pod("c"), 200, "pod_patched.json"),
            json("PATCH", pod("e"), 200, "pod_patched.json"),
            // d was marked by an earlier plan and is busy now: unmarked.
            json("PATCH", pod("d"), 200, "pod_patched.json"),
            json("PATCH", SCALE, 200, "scale_3.json"),
        ],
    );
    let taken_at = Instant::now();
    let per_pod = loads(&[
        ("a", 9.0),
        ("b", 4.0),
        ("c", 0.5),
        ("d", 7.0),
        ("e", 1.0),
        ("f", 0.0),
    ]);
    let scaler = KubeScaler::new(client, "convoy", "convoy-node")
        .unwrap()
        .pod_load(move || PodLoadSnapshot {
            taken_at,
            per_pod: per_pod.clone(),
        })
        .ready_count(|| Some(4));
    scaler.refresh().await.unwrap();

    let outcome = scaler.scale(3).await.unwrap();
    assert_eq!((outcome.from, outcome.to), (5, 3));
    assert_eq!(
        outcome.marked,
        vec!["convoy-node-7d9f-c", "convoy-node-7d9f-e"]
    );

    let seen = server.await.unwrap();
    assert_eq!(
        seen[2].param("labelSelector").as_deref(),
        Some("app.kubernetes.io/name=convoy-node"),
        "pods listed by the scale's status.selector"
    );
    // The least loaded has the lowest cost: it goes first.
    assert_eq!(
        seen[3].body,
        json!({ "metadata": { "annotations": { POD_DELETION_COST: "-2" } } })
    );
    assert_eq!(
        seen[4].body,
        json!({ "metadata": { "annotations": { POD_DELETION_COST: "-1" } } })
    );
    assert_eq!(
        seen[5].body,
        json!({ "metadata": { "annotations": { POD_DELETION_COST: null } } })
    );
    assert_eq!(
        seen[6].body,
        json!({ "spec": { "replicas": 3 }, "metadata": { "resourceVersion": "1001" } })
    );
    // f is terminating already: never marked although idle.
    assert!(seen.iter().all(|s| !s.path.ends_with("-f")));
    assert_eq!(scaler.replicas(), ReplicaCounts::new(3, 3));
}

#[tokio::test(start_paused = true)]
async fn scale_down_on_stale_load_is_refused_and_writes_nothing() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            json("GET", SCALE, 200, "scale_5.json"),
        ],
    );
    let taken_at = Instant::now();
    let scaler = KubeScaler::new(client, "convoy", "convoy-node")
        .unwrap()
        .max_load_age(Duration::from_secs(30))
        .unwrap()
        .pod_load(move || PodLoadSnapshot {
            taken_at,
            per_pod: loads(&[("a", 1.0)]),
        });
    scaler.refresh().await.unwrap();
    tokio::time::advance(Duration::from_secs(31)).await;

    let error = scaler.scale(3).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Stale, "{error}");
    assert!(error.to_string().contains("per-pod load"), "{error}");
    assert_eq!(server.await.unwrap().len(), 2, "only the reads happened");
    assert_eq!(scaler.replicas().current, 5);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_api_server_keeps_the_last_snapshot_and_refuses_writes() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            down("GET", SCALE),
            down("GET", SCALE),
        ],
    );
    let scaler = Arc::new(
        KubeScaler::new(client, "convoy", "convoy-node")
            .unwrap()
            .ready_count(|| Some(4)),
    );
    scaler.refresh().await.unwrap();
    assert!(!scaler.health().is_failing());

    // Through the autoscaler's trait, as its driver calls it.
    let down = scaler.scale_to(2).await.unwrap_err();
    let down = down
        .downcast_ref::<convoy_kube::Error>()
        .expect("a typed error");
    assert_eq!(down.kind(), ErrorKind::Unreachable, "{down}");
    let up = scaler.scale(9).await.unwrap_err();
    assert_eq!(up.kind(), ErrorKind::Unreachable);

    assert_eq!(
        scaler.replicas(),
        ReplicaCounts::new(5, 4),
        "the last snapshot is served"
    );
    let health = scaler.health();
    assert_eq!(health.consecutive_failures, 2);
    assert!(health
        .last_error
        .as_deref()
        .unwrap()
        .contains("connection refused"));
    assert!(health.is_stale(
        Instant::now() + Duration::from_secs(11),
        Duration::from_secs(10)
    ));
    assert_eq!(server.await.unwrap().len(), 3, "no write was attempted");
}

#[tokio::test(start_paused = true)]
async fn a_scale_written_by_someone_else_meanwhile_is_a_conflict() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            json("PATCH", SCALE, 409, "conflict_scale.json"),
        ],
    );
    let scaler = KubeScaler::new(client, "convoy", "convoy-node").unwrap();
    let error = scaler.scale(6).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Conflict, "{error}");
    assert!(
        !scaler.health().is_failing(),
        "a 409 is an answer, not an outage"
    );
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn scale_down_without_a_load_source_leaves_the_choice_to_kubernetes() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            json("GET", SCALE, 200, "scale_5.json"),
            json("PATCH", SCALE, 200, "scale_3.json"),
        ],
    );
    let scaler = KubeScaler::new(client, "convoy", "convoy-node").unwrap();
    scaler.refresh().await.unwrap();
    assert!(scaler.scale(3).await.unwrap().marked.is_empty());
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_scale_down_decided_on_another_count_than_the_fresh_one_is_refused() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            // No read before the decision: it saw no count at all.
            json("GET", SCALE, 200, "scale_5.json"),
            // Someone scaled to 7 after the decision saw 5.
            json("GET", SCALE, 200, "scale_7.json"),
            // The next decision saw 7: its scale-down goes through.
            json("GET", SCALE, 200, "scale_7.json"),
            json("PATCH", SCALE, 200, "scale_5.json"),
        ],
    );
    let scaler = KubeScaler::new(client, "convoy", "convoy-node").unwrap();
    let blind = scaler.scale(1).await.unwrap_err();
    assert_eq!(blind.kind(), ErrorKind::Stale, "{blind}");
    assert_eq!(
        scaler.replicas().current,
        5,
        "the read is kept for the next decision"
    );
    let moved = scaler.scale(4).await.unwrap_err();
    assert_eq!(moved.kind(), ErrorKind::Stale, "{moved}");
    assert!(moved.to_string().contains("saw Some(5)"), "{moved}");
    assert_eq!(scaler.scale(5).await.unwrap().from, 7);
    assert_eq!(server.await.unwrap().len(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_call_with_no_answer_is_unreachable_after_the_call_timeout() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SCALE, 200, "scale_5.json"),
            ("GET", SCALE.into(), Reply::Hang),
        ],
    );
    let scaler = KubeScaler::new(client, "convoy", "convoy-node")
        .unwrap()
        .call_timeout(Duration::from_secs(3))
        .unwrap();
    scaler.refresh().await.unwrap();
    let started = Instant::now();
    let error = scaler.scale(2).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unreachable, "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    assert!(scaler.health().is_failing());
    assert_eq!(scaler.replicas().current, 5, "the snapshot is kept");
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn scaling_to_the_current_count_writes_nothing() {
    let (client, handle) = mock_client();
    let server = replay(handle, vec![json("GET", SCALE, 200, "scale_5.json")]);
    let scaler = KubeScaler::new(client, "convoy", "convoy-node").unwrap();
    let outcome = scaler.scale(5).await.unwrap();
    assert_eq!((outcome.from, outcome.to), (5, 5));
    assert_eq!(server.await.unwrap().len(), 1);
}

#[tokio::test]
async fn invalid_configuration_names_the_field() {
    let (client, _handle) = mock_client();
    let e = KubeScaler::new(client.clone(), "convoy", "Convoy_Node").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Config);
    assert!(e.to_string().contains("`deployment`"), "{e}");
    let e = KubeScaler::new(client.clone(), "", "convoy-node").unwrap_err();
    assert!(e.to_string().contains("`namespace`"), "{e}");
    let e = KubeScaler::new(client, "convoy", "convoy-node")
        .unwrap()
        .max_load_age(Duration::ZERO)
        .unwrap_err();
    assert!(e.to_string().contains("`max_load_age`"), "{e}");
}

#[tokio::test(start_paused = true)]
async fn a_follower_writes_nothing() {
    use convoy_kube::{LeaderConfig, LeaderElector};
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![json(
            "GET",
            "/apis/coordination.k8s.io/v1/namespaces/convoy/leases/convoy-autoscaler",
            200,
            "lease_other.json",
        )],
    );
    let mut elector = LeaderElector::new(
        client.clone(),
        LeaderConfig::new("convoy", "convoy-autoscaler", "convoy-front-0"),
    )
    .unwrap();
    elector.step().await.unwrap();
    let scaler = KubeScaler::new(client, "convoy", "convoy-node")
        .unwrap()
        .leader(elector.handle());
    let error = scaler.scale(1).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotLeader, "{error}");
    assert_eq!(server.await.unwrap().len(), 1, "only the lease was read");
}
