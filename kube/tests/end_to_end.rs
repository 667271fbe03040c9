//! The scaler, the EndpointSlice source and the leader election together,
//! end to end against an in-process fake API server and controller (see
//! `support/cluster.rs`) over `tower_test::mock`, in paused tokio time.

mod support;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use convoy_autoscale::{
    Autoscaler, Engine, EngineConfig, LoadSample, ReplicaCounts, Scaler, TargetOngoing,
    TargetOngoingConfig,
};
use convoy_kube::{
    EndpointSliceSource, ErrorKind, KubeScaler, LeaderConfig, LeaderElector, PodLoadSnapshot, Role,
    API_CALLS,
};
use convoy_remote::{ChangeStream, EndpointSource, EndpointState, EndpointTable};
use futures::StreamExt;
use parking_lot::Mutex;
use support::cluster::{FakeCluster, NAME, NS};
use support::mock_client;
use tokio::time::{Duration, Instant};

/// What a front balancing over the source would hold.
struct Front {
    changes: ChangeStream,
    table: EndpointTable,
    errors: usize,
}

impl Front {
    /// Applies changes until `done` holds of the table; at most 2 minutes
    /// of (paused) time.
    async fn until(&mut self, what: &str, done: impl Fn(&EndpointTable) -> bool) {
        self.until_with_errors(what, |t, _| done(t)).await;
    }

    /// The same, with the count of errors the source yielded.
    async fn until_with_errors(
        &mut self,
        what: &str,
        done: impl Fn(&EndpointTable, usize) -> bool,
    ) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done(&self.table, self.errors) {
            match tokio::time::timeout_at(deadline, self.changes.next()).await {
                Ok(Some(Ok(change))) => {
                    self.table.apply(change);
                }
                Ok(Some(Err(_))) => self.errors += 1,
                Ok(None) => panic!("the source ended while waiting for {what}"),
                Err(_) => panic!("no {what} within 2 minutes: {:?}", self.names()),
            }
        }
    }

    fn names(&self) -> Vec<(String, EndpointState)> {
        self.table.iter().map(|e| (e.id.clone(), e.state)).collect()
    }

    fn ready(&self) -> Vec<String> {
        self.table
            .iter()
            .filter(|e| e.is_ready())
            .map(|e| e.id.clone())
            .collect()
    }
}

fn pod(n: u32) -> String {
    format!("{NAME}-{n}")
}

#[tokio::test(start_paused = true)]
async fn scale_up_and_down_through_the_fake_cluster_keeps_the_busiest_replicas() {
    let (client, handle) = mock_client();
    let (cluster, _server) = FakeCluster::start(handle, 2);

    let mut elector = LeaderElector::new(
        client.clone(),
        LeaderConfig::new(NS, "convoy-node-autoscaler", "front-0"),
    )
    .unwrap();
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    let leader = elector.handle();
    tokio::spawn(elector.run());

    let source = EndpointSliceSource::new(client.clone(), NS, NAME, "v1")
        .unwrap()
        .port_name("http");
    let status = source.status();
    let mut front = Front {
        changes: source.changes(),
        table: EndpointTable::new(),
        errors: 0,
    };
    let loads = Arc::new(Mutex::new(PodLoadSnapshot {
        taken_at: Instant::now(),
        per_pod: HashMap::new(),
    }));
    let scaler = {
        let loads = loads.clone();
        let status = status.clone();
        KubeScaler::new(client.clone(), NS, NAME)
            .unwrap()
            .leader(leader.clone())
            .pod_load(move || loads.lock().clone())
            .ready_count(move || status.listed().then(|| status.ready()))
    };
    scaler.refresh().await.unwrap();
    front
        .until("two ready nodes", |t| {
            t.iter().filter(|e| e.is_ready()).count() == 2
        })
        .await;
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(2));

    // Scale up: the new pods are counted at once, ready after they start.
    scaler.scale_to(4).await.unwrap();
    assert_eq!(scaler.replicas().current, 4);
    front
        .until("four ready nodes", |t| {
            t.iter().filter(|e| e.is_ready()).count() == 4
        })
        .await;
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(4));
    assert_eq!(front.ready(), vec![pod(1), pod(2), pod(3), pod(4)]);

    // Scale down with pods 2 and 4 the least loaded: they, not the newest
    // (Kubernetes' own tie-break), drain and go.
    *loads.lock() = PodLoadSnapshot {
        taken_at: Instant::now(),
        per_pod: [(pod(1), 9.0), (pod(2), 0.5), (pod(3), 6.0), (pod(4), 1.0)]
            .into_iter()
            .collect(),
    };
    scaler.scale_to(2).await.unwrap();
    front
        .until("2 and 4 draining", |t| {
            [2, 4].iter().all(|n| {
                t.get(&pod(*n))
                    .is_some_and(|e| e.state == EndpointState::Draining)
            })
        })
        .await;
    front.until("2 and 4 removed", |t| t.len() == 2).await;
    assert_eq!(
        front.ready(),
        vec![pod(1), pod(3)],
        "the busiest replicas stay"
    );
    assert_eq!(cluster.live_pods(), vec![pod(1), pod(3)]);
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(2));
    assert_eq!(front.errors, 0);

    // Every kind of call convoy-kube made here is one the RBAC Role grants
    // (API_CALLS, checked against deploy/kubernetes by tests/manifests.rs),
    // and every call in API_CALLS was made.
    let made: BTreeSet<(String, String, String)> =
        cluster.log().iter().map(|l| rbac_call(l)).collect();
    let listed: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|c| (c.group.into(), c.resource.into(), c.verb.into()))
        .collect();
    assert_eq!(made, listed);
}

/// `METHOD path[?watch]` as RBAC's (group, resource[/subresource], verb).
fn rbac_call(line: &str) -> (String, String, String) {
    let (method, target) = line.split_once(' ').unwrap();
    let (path, watch) = match target.strip_suffix("?watch") {
        Some(path) => (path, true),
        None => (target, false),
    };
    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    // /api/v1/namespaces/NS/... or /apis/GROUP/VERSION/namespaces/NS/...
    let (group, rest) = match parts[0] {
        "api" => ("", &parts[4..]),
        _ => (parts[1], &parts[5..]),
    };
    let resource = match rest {
        [resource, _, sub] => format!("{resource}/{sub}"),
        [resource, ..] => resource.to_string(),
        [] => panic!("no resource in {line}"),
    };
    let verb = match (method, rest.len(), watch) {
        ("GET", 1, true) => "watch",
        ("GET", 1, false) => "list",
        ("GET", _, _) => "get",
        ("POST", _, _) => "create",
        ("PUT", _, _) => "update",
        ("PATCH", _, _) => "patch",
        ("DELETE", _, _) => "delete",
        _ => panic!("unexpected {line}"),
    };
    (group.into(), resource, verb.into())
}

#[tokio::test(start_paused = true)]
async fn an_outage_keeps_the_snapshot_and_refuses_writes_then_everything_recovers() {
    let (client, handle) = mock_client();
    let (cluster, _server) = FakeCluster::start(handle, 3);
    let source = EndpointSliceSource::new(client.clone(), NS, NAME, "v1")
        .unwrap()
        .backoff(Duration::from_millis(500), Duration::from_secs(4))
        .unwrap();
    let status = source.status();
    let mut front = Front {
        changes: source.changes(),
        table: EndpointTable::new(),
        errors: 0,
    };
    let taken_at = Instant::now();
    let scaler = {
        let status = status.clone();
        KubeScaler::new(client.clone(), NS, NAME)
            .unwrap()
            .max_load_age(Duration::from_secs(600))
            .unwrap()
            .pod_load(move || PodLoadSnapshot {
                taken_at,
                per_pod: HashMap::new(),
            })
            .ready_count(move || status.listed().then(|| status.ready()))
    };
    scaler.refresh().await.unwrap();
    front.until("three ready nodes", |t| t.len() == 3).await;

    cluster.set_down(true);
    let error = scaler.scale(1).await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unreachable, "{error}");
    assert_eq!(cluster.desired(), 3, "nothing was written");
    assert_eq!(
        scaler.replicas(),
        ReplicaCounts::ready(3),
        "the last snapshot is served"
    );
    // The front sees errors, never a removal: it keeps balancing over three.
    front
        .until_with_errors("two source errors", |_, errors| errors >= 2)
        .await;
    assert_eq!(front.ready().len(), 3);
    assert!(status.health().is_failing());
    assert!(scaler.health().is_failing());

    // Back, with the events of the outage compacted away: the watch gets
    // 410 Gone, the source re-lists, and writes go through again.
    cluster.set_down(false);
    cluster.compact();
    scaler.scale(4).await.unwrap();
    front
        .until("four ready nodes", |t| {
            t.iter().filter(|e| e.is_ready()).count() == 4
        })
        .await;
    assert!(status.relists() >= 1, "re-listed after 410");
    assert!(!status.health().is_failing());
    assert_eq!(scaler.replicas(), ReplicaCounts::ready(4));
}

#[tokio::test(start_paused = true)]
async fn of_two_autoscalers_only_the_lease_holder_writes() {
    let (client, handle) = mock_client();
    let (cluster, _server) = FakeCluster::start(handle, 2);
    let config = |id: &str| LeaderConfig::new(NS, "convoy-node-autoscaler", id);
    let mut a = LeaderElector::new(client.clone(), config("front-a")).unwrap();
    let mut b = LeaderElector::new(client.clone(), config("front-b")).unwrap();
    let scaler = |leader| {
        KubeScaler::new(client.clone(), NS, NAME)
            .unwrap()
            .leader(leader)
    };
    let (scaler_a, scaler_b) = (scaler(a.handle()), scaler(b.handle()));

    assert_eq!(a.step().await.unwrap(), Role::Leader);
    assert_eq!(
        b.step().await.unwrap(),
        Role::Follower {
            holder: Some("front-a".into())
        }
    );
    assert_eq!(
        scaler_b.scale(5).await.unwrap_err().kind(),
        ErrorKind::NotLeader
    );
    scaler_a.scale(3).await.unwrap();
    assert_eq!(cluster.desired(), 3);

    // a stops renewing (its process hangs); b takes over a lease duration
    // after it last saw the record change, and a no longer claims to lead.
    for _ in 0..8 {
        tokio::time::advance(Duration::from_secs(2)).await;
        b.step().await.unwrap();
    }
    assert!(b.handle().is_leader());
    assert!(!a.handle().is_leader());
    assert_eq!(
        scaler_a.scale(1).await.unwrap_err().kind(),
        ErrorKind::NotLeader
    );
    scaler_b.scale(4).await.unwrap();
    assert_eq!(cluster.desired(), 4);
    // a comes back: its renewal carries the old resourceVersion and loses.
    assert_eq!(
        a.step().await.unwrap(),
        Role::Follower {
            holder: Some("front-b".into())
        }
    );
    assert!(!a.handle().is_leader() && b.handle().is_leader());
}

#[tokio::test(start_paused = true)]
async fn convoy_autoscale_drives_the_deployment_through_the_kube_scaler() {
    let (client, handle) = mock_client();
    let (cluster, _server) = FakeCluster::start(handle, 1);
    let source = EndpointSliceSource::new(client.clone(), NS, NAME, "v1").unwrap();
    let status = source.status();
    let mut front = Front {
        changes: source.changes(),
        table: EndpointTable::new(),
        errors: 0,
    };
    front.until("one ready node", |t| t.len() == 1).await;

    // The load the front measures: total ongoing requests, and per pod.
    let ongoing = Arc::new(Mutex::new(0.0_f64));
    let per_pod = Arc::new(Mutex::new(PodLoadSnapshot {
        taken_at: Instant::now(),
        per_pod: HashMap::new(),
    }));
    let scaler = {
        let per_pod = per_pod.clone();
        let status = status.clone();
        KubeScaler::new(client, NS, NAME)
            .unwrap()
            .pod_load(move || per_pod.lock().clone())
            .ready_count(move || status.listed().then(|| status.ready()))
    };
    scaler.refresh().await.unwrap();
    let policy =
        TargetOngoing::new(TargetOngoingConfig::default().target_ongoing_requests(2.0)).unwrap();
    let engine = Engine::new(
        EngineConfig::default()
            .min_replicas(1)
            .max_replicas(6)
            .no_delays(),
        Box::new(policy),
    )
    .unwrap();
    let autoscaler = {
        let ongoing = ongoing.clone();
        Autoscaler::new(engine, scaler)
            .with_source(move |_now| Some(LoadSample::ongoing(*ongoing.lock())))
    };
    let control = autoscaler.handle();
    tokio::spawn(autoscaler.run());

    // 8 ongoing requests at 2 per replica: 4 replicas, up through the
    // scale subresource, ready when the pods start.
    *ongoing.lock() = 8.0;
    front
        .until("four ready nodes", |t| {
            t.iter().filter(|e| e.is_ready()).count() == 4
        })
        .await;
    assert_eq!(cluster.desired(), 4);

    // Load falls to 2, all of it on pod 3: down to 1 replica, and pod 3 is
    // the one kept.
    *per_pod.lock() = PodLoadSnapshot {
        taken_at: Instant::now(),
        per_pod: [(pod(3), 2.0)].into_iter().collect(),
    };
    *ongoing.lock() = 2.0;
    front.until("one node left", |t| t.len() == 1).await;
    assert_eq!(front.ready(), vec![pod(3)]);
    assert_eq!(cluster.desired(), 1);
    assert_eq!(control.last_decision().map(|d| d.desired), Some(1));
    control.shutdown();
}

#[tokio::test(start_paused = true)]
async fn a_leader_stopping_hands_the_lease_over_at_once() {
    let (client, handle) = mock_client();
    let (_cluster, _server) = FakeCluster::start(handle, 1);
    let config = |id: &str| LeaderConfig::new(NS, "convoy-node-autoscaler", id);
    let a = LeaderElector::new(client.clone(), config("front-a")).unwrap();
    let mut b = LeaderElector::new(client, config("front-b")).unwrap();
    let a_leads = a.handle();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let a_task = tokio::spawn(a.run_until(async move {
        let _ = stopped.await;
    }));
    tokio::time::sleep(Duration::from_millis(10)).await;
    assert!(a_leads.is_leader());
    assert_eq!(
        b.step().await.unwrap(),
        Role::Follower {
            holder: Some("front-a".into())
        }
    );
    // a stops (SIGTERM): it releases, and b leads at its next step, with no
    // lease-duration wait.
    stop.send(()).unwrap();
    a_task.await.unwrap();
    assert!(!a_leads.is_leader());
    let started = Instant::now();
    assert_eq!(b.step().await.unwrap(), Role::Leader);
    assert!(started.elapsed() < Duration::from_secs(1));
}
