//! The etcd source and registration against a real etcd (Debian's
//! etcd-server, installed by scripts/test_setup.sh) started on loopback.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use convoy_remote::source::etcd::{EtcdConfig, EtcdSource, Registration};
use convoy_remote::{Change, ChangeStream, Endpoint, EndpointSource, EndpointState};
use futures::StreamExt;
use support::etcd::Etcd;
use tokio::time::{timeout, Instant};

const PREFIX: &str = "/convoy/test/endpoints/";

fn endpoint(id: &str, port: u16) -> Endpoint {
    Endpoint::ready(id, ([127, 0, 0, 1], port).into(), "1")
}

fn config(etcd: &Etcd) -> EtcdConfig {
    let mut c = EtcdConfig::new(etcd.url(), PREFIX);
    c.max_backoff = Duration::from_millis(200);
    c.request_timeout = Duration::from_secs(2);
    c
}

/// The next change, skipping reported errors; panics after `within`.
async fn next_change(changes: &mut ChangeStream, within: Duration) -> Change {
    let deadline = Instant::now() + within;
    loop {
        match timeout(deadline - Instant::now(), changes.next()).await {
            Ok(Some(Ok(change))) => return change,
            Ok(Some(Err(_reported))) => continue,
            Ok(None) => panic!("the etcd source ended"),
            Err(_) => panic!("no change within {within:?}"),
        }
    }
}

/// Applies changes until the set of endpoints equals `want`; returns the
/// changes seen.
async fn until_set(
    changes: &mut ChangeStream,
    set: &mut BTreeMap<String, Endpoint>,
    want: &[Endpoint],
    within: Duration,
) -> Vec<Change> {
    let want: BTreeMap<String, Endpoint> = want.iter().map(|e| (e.id.clone(), e.clone())).collect();
    let deadline = Instant::now() + within;
    let mut seen = Vec::new();
    while *set != want {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "set {set:?} did not become {want:?} within {within:?}; seen {seen:?}"
        );
        let change = next_change(changes, left).await;
        match &change {
            Change::Insert(e) | Change::Update(e) => {
                set.insert(e.id.clone(), e.clone());
            }
            Change::Remove(id) => {
                set.remove(id);
            }
        }
        seen.push(change);
    }
    seen
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_is_seen_inserted_updated_and_removed() {
    let etcd = Etcd::start();
    let mut changes = EtcdSource::new(&config(&etcd)).unwrap().changes();
    let a = endpoint("node-a", 9001);
    let reg = Registration::register(&config(&etcd), a.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let within = Duration::from_secs(10);
    assert_eq!(
        next_change(&mut changes, within).await,
        Change::Insert(a.clone())
    );

    reg.set_state(EndpointState::Draining).await.unwrap();
    assert_eq!(
        next_change(&mut changes, within).await,
        Change::Update(a.clone().draining())
    );
    // Revoking the lease deletes the key at once, long before its TTL.
    let started = Instant::now();
    reg.deregister().await.unwrap();
    assert_eq!(
        next_change(&mut changes, within).await,
        Change::Remove(a.id.clone())
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_registered_before_the_source_starts_are_listed_first() {
    let etcd = Etcd::start();
    let a = endpoint("a", 1);
    let b = endpoint("b", 2);
    let _ra = Registration::register(&config(&etcd), a.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let _rb = Registration::register(&config(&etcd), b.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    let mut changes = EtcdSource::new(&config(&etcd)).unwrap().changes();
    let within = Duration::from_secs(10);
    assert_eq!(next_change(&mut changes, within).await, Change::Insert(a));
    assert_eq!(next_change(&mut changes, within).await, Change::Insert(b));
    // Later registrations follow as changes.
    let c = endpoint("c", 3);
    let _rc = Registration::register(&config(&etcd), c.clone(), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(next_change(&mut changes, within).await, Change::Insert(c));
}

/// Run by `a_killed_registrant_is_removed_when_its_lease_expires` as a
/// child process: registers and waits to be killed.
#[tokio::test]
#[ignore = "a child process of another test"]
async fn registrant_child() {
    let Ok(url) = std::env::var("CONVOY_TEST_ETCD_URL") else {
        return;
    };
    let mut c = EtcdConfig::new(url, PREFIX);
    c.request_timeout = Duration::from_secs(2);
    let _reg = Registration::register(&c, endpoint("child", 9100), Duration::from_secs(2))
        .await
        .unwrap();
    println!("registered");
    tokio::time::sleep(Duration::from_secs(60)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_registrant_is_removed_when_its_lease_expires() {
    let etcd = Etcd::start();
    let mut changes = EtcdSource::new(&config(&etcd)).unwrap().changes();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["registrant_child", "--exact", "--ignored", "--nocapture"])
        .env("CONVOY_TEST_ETCD_URL", etcd.url())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let inserted = timeout(
        Duration::from_secs(15),
        next_change(&mut changes, Duration::from_secs(15)),
    )
    .await;
    assert_eq!(inserted.unwrap(), Change::Insert(endpoint("child", 9100)));
    // Several renewals (every ttl / 3) pass: the key stays.
    tokio::time::sleep(Duration::from_secs(3)).await;
    tokio_test::assert_pending!(futures::poll!(changes.next()));

    child.kill().unwrap(); // SIGKILL: no deregistration
    child.wait().unwrap();
    let killed = Instant::now();
    assert_eq!(
        next_change(&mut changes, Duration::from_secs(10)).await,
        Change::Remove("child".into())
    );
    // Gone when the 2 s lease expired (etcd checks expiry every 500 ms).
    let after = killed.elapsed();
    assert!(
        after < Duration::from_secs(5),
        "removed {after:?} after the kill"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_source_recovers_after_etcd_restarts_and_after_a_new_cluster() {
    let mut etcd = Etcd::start();
    let mut changes = EtcdSource::new(&config(&etcd)).unwrap().changes();
    let mut set = BTreeMap::new();
    let a = endpoint("a", 1);
    let b = endpoint("b", 2);
    let ttl = Duration::from_secs(3);
    let _ra = Registration::register(&config(&etcd), a.clone(), ttl)
        .await
        .unwrap();
    until_set(
        &mut changes,
        &mut set,
        std::slice::from_ref(&a),
        Duration::from_secs(10),
    )
    .await;

    // etcd is killed: the source reports it and keeps what it announced.
    etcd.kill();
    let reported = timeout(Duration::from_secs(15), changes.next()).await;
    assert!(
        matches!(reported, Ok(Some(Err(_)))),
        "expected a reported error, got {reported:?}"
    );
    // Same data, same ports: the watch resumes; `a` is not announced again.
    etcd.restart();
    let _rb = Registration::register(&config(&etcd), b.clone(), ttl)
        .await
        .unwrap();
    let seen = until_set(
        &mut changes,
        &mut set,
        &[a.clone(), b.clone()],
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(seen, vec![Change::Insert(b.clone())]);

    // A new, empty cluster on the same address (revisions start again):
    // the source lists it, the registrations find their leases gone and
    // register again, and the set converges to both again.
    etcd.wipe();
    etcd.restart();
    until_set(
        &mut changes,
        &mut set,
        &[a.clone(), b.clone()],
        Duration::from_secs(20),
    )
    .await;
    // ...and stays in step with later changes.
    let c = endpoint("c", 3);
    let rc = Registration::register(&config(&etcd), c.clone(), ttl)
        .await
        .unwrap();
    until_set(
        &mut changes,
        &mut set,
        &[a.clone(), b.clone(), c],
        Duration::from_secs(10),
    )
    .await;
    rc.deregister().await.unwrap();
    until_set(&mut changes, &mut set, &[a, b], Duration::from_secs(10)).await;
}
