//! LeaderElector against recorded API-server answers over `tower_test::mock`.

mod support;

use convoy_kube::{ErrorKind, LeaderConfig, LeaderElector, Role};
use serde_json::json;
use support::{down, json, mock_client, replay, Reply, Step};
use tokio::time::{Duration, Instant};

const LEASES: &str = "/apis/coordination.k8s.io/v1/namespaces/convoy/leases";

fn lease() -> String {
    format!("{LEASES}/convoy-autoscaler")
}

/// A lease we read as ours and renew, then `next`.
fn held_then(next: Vec<Step>) -> Vec<Step> {
    let mut script = vec![
        json("GET", lease(), 200, "lease_mine.json"),
        json("PUT", lease(), 200, "lease_mine.json"),
    ];
    script.extend(next);
    script
}

fn elector(client: kube::Client) -> LeaderElector {
    LeaderElector::new(
        client,
        LeaderConfig::new("convoy", "convoy-autoscaler", "convoy-front-0"),
    )
    .unwrap()
}

#[tokio::test(start_paused = true)]
async fn an_absent_lease_is_created_and_held() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", lease(), 404, "lease_not_found.json"),
            json("POST", LEASES, 201, "lease_mine.json"),
        ],
    );
    let mut elector = elector(client);
    let handle = elector.handle();
    assert!(!handle.is_leader());
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    assert!(handle.is_leader());

    let seen = server.await.unwrap();
    let spec = &seen[1].body["spec"];
    assert_eq!(spec["holderIdentity"], json!("convoy-front-0"));
    assert_eq!(spec["leaseDurationSeconds"], json!(15));
    assert_eq!(spec["leaseTransitions"], json!(0));
    assert!(spec["renewTime"].is_string() && spec["acquireTime"].is_string());
}

#[tokio::test(start_paused = true)]
async fn losing_the_create_race_makes_a_follower() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", lease(), 404, "lease_not_found.json"),
            json("POST", LEASES, 409, "lease_exists.json"),
        ],
    );
    let mut elector = elector(client);
    assert_eq!(
        elector.step().await.unwrap(),
        Role::Follower { holder: None }
    );
    assert!(!elector.handle().is_leader());
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_renewal_conflict_on_resource_version_loses_the_lease() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        held_then(vec![
            json("GET", lease(), 200, "lease_mine.json"),
            json("PUT", lease(), 409, "lease_conflict.json"),
        ]),
    );
    let mut elector = elector(client);
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    assert!(elector.handle().is_leader());
    tokio::time::advance(Duration::from_secs(2)).await;
    let role = elector.step().await.unwrap();
    assert_eq!(
        role,
        Role::Follower {
            holder: Some("convoy-front-0".into())
        }
    );
    assert!(
        !elector.handle().is_leader(),
        "a 409 on renewal is a lost lease at once"
    );

    let seen = server.await.unwrap();
    // Every renewal is a replace under the version it read.
    assert_eq!(seen[1].body["metadata"]["resourceVersion"], json!("310"));
    assert_eq!(
        seen[1].body["spec"]["leaseTransitions"],
        json!(3),
        "a renewal is no transition"
    );
    assert_eq!(
        seen[1].body["spec"]["acquireTime"],
        json!("2026-12-01T09:11:00.000000Z")
    );
}

/// Another candidate's unchanged record `file`, read three times: still
/// followed `after - 1` s after we first saw it, taken over at `after` s.
/// Returns the requests.
async fn take_over_after(file: &str, after: u64) -> Vec<support::Seen> {
    let (client, handle) = mock_client();
    let mut script = vec![json("GET", lease(), 200, file); 3];
    script.push(json("PUT", lease(), 200, "lease_mine.json"));
    let server = replay(handle, script);
    let mut elector = elector(client);
    let other = Role::Follower {
        holder: Some("convoy-front-1".into()),
    };
    assert_eq!(elector.step().await.unwrap(), other);
    tokio::time::advance(Duration::from_secs(after - 1)).await;
    assert_eq!(elector.step().await.unwrap(), other);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    server.await.unwrap()
}

#[tokio::test(start_paused = true)]
async fn another_holder_is_followed_until_its_record_stops_changing_for_a_lease_duration() {
    // The holder's renewTime is old on the wall clock, but expiry is judged
    // by when *we* last saw the record change: 14 s is not yet 15.
    let seen = take_over_after("lease_other.json", 15).await;
    let takeover = &seen[3].body;
    assert_eq!(takeover["metadata"]["resourceVersion"], json!("300"));
    assert_eq!(takeover["spec"]["holderIdentity"], json!("convoy-front-0"));
    assert_eq!(
        takeover["spec"]["leaseTransitions"],
        json!(3),
        "a take-over is a transition"
    );
}

#[tokio::test(start_paused = true)]
async fn the_holders_own_lease_duration_is_respected() {
    // Our lease_duration is 15 s; the holder wrote 40 s in its record.
    take_over_after("lease_other_40s.json", 40).await;
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_api_server_ends_leadership_at_the_renew_deadline() {
    let (client, handle) = mock_client();
    let server = replay(handle, held_then(vec![down("GET", lease())]));
    let mut elector = elector(client);
    let handle = elector.handle();
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        elector.step().await.unwrap_err().kind(),
        ErrorKind::Unreachable
    );
    assert!(
        handle.is_leader(),
        "within renew_deadline (10 s) of the last renewal"
    );
    assert!(handle.health().is_failing());
    tokio::time::advance(Duration::from_secs(8)).await;
    assert!(
        !handle.is_leader(),
        "not renewed for 10 s: no longer leader"
    );
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_hung_renewal_gives_up_before_the_renew_deadline() {
    let (client, handle) = mock_client();
    let server = replay(handle, held_then(vec![("GET", lease(), Reply::Hang)]));
    let mut elector = elector(client);
    let handle = elector.handle();
    assert_eq!(elector.step().await.unwrap(), Role::Leader);
    let started = Instant::now();
    let error = elector.step().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unreachable, "{error}");
    assert_eq!(started.elapsed(), Duration::from_secs(5), "call_timeout");
    assert!(
        handle.is_leader(),
        "5 s since the renewal: within the deadline"
    );
    tokio::time::advance(Duration::from_secs(5)).await;
    assert!(!handle.is_leader());
    server.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn release_clears_the_holder() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        held_then(vec![
            json("GET", lease(), 200, "lease_mine.json"),
            json("PUT", lease(), 200, "lease_other.json"),
        ]),
    );
    let mut elector = elector(client);
    elector.step().await.unwrap();
    elector.release().await.unwrap();
    assert!(!elector.handle().is_leader());
    let seen = server.await.unwrap();
    assert_eq!(seen[3].body["spec"].get("holderIdentity"), None);
}

#[tokio::test]
async fn durations_out_of_order_name_the_field() {
    let (client, _handle) = mock_client();
    let mut config = LeaderConfig::new("convoy", "convoy-autoscaler", "me");
    config.renew_deadline = Duration::from_secs(20);
    let e = LeaderElector::new(client.clone(), config).unwrap_err();
    assert!(e.to_string().contains("`lease_duration`"), "{e}");
    let mut config = LeaderConfig::new("convoy", "convoy-autoscaler", "me");
    config.retry_period = Duration::from_secs(10);
    let e = LeaderElector::new(client.clone(), config).unwrap_err();
    assert!(e.to_string().contains("`renew_deadline`"), "{e}");
    let e = LeaderElector::new(client, LeaderConfig::new("convoy", "convoy-autoscaler", ""))
        .unwrap_err();
    assert!(e.to_string().contains("`identity`"), "{e}");
}
