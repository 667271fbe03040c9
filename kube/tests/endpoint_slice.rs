//! EndpointSliceSource against recorded API-server answers over
//! `tower_test::mock`: list, watch with bookmarks, 410 Gone re-list, an
//! unreachable API server.

mod support;

use std::net::SocketAddr;

use convoy_kube::{slice_endpoints, EndpointSliceSource};
use convoy_remote::{Change, Endpoint, EndpointSource, EndpointState};
use futures::StreamExt;
use k8s_openapi::api::discovery::v1::{
    Endpoint as SliceEndpoint, EndpointConditions, EndpointPort, EndpointSlice,
};
use support::{down, events, json, mock_client, replay, Reply};
use tokio::time::{Duration, Instant};

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/convoy/endpointslices";

fn ep(pod: &str, ip: &str) -> Endpoint {
    let addr: SocketAddr = format!("{ip}:8080").parse().unwrap();
    Endpoint::ready(format!("convoy-node-7d9f-{pod}"), addr, "v2")
}

fn source(client: kube::Client) -> EndpointSliceSource {
    EndpointSliceSource::new(client, "convoy", "convoy-node", "v2")
        .unwrap()
        .port_name("http")
}

async fn take(changes: &mut convoy_remote::ChangeStream, n: usize) -> Vec<Change> {
    let mut out = Vec::new();
    for _ in 0..n {
        let next = tokio::time::timeout(Duration::from_secs(60), changes.next())
            .await
            .expect("a change within a minute")
            .expect("the stream goes on");
        out.push(next.expect("a change, not an error"));
    }
    out
}

#[tokio::test(start_paused = true)]
async fn list_then_watch_with_bookmarks_then_410_relists_and_yields_only_differences() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SLICES, 200, "endpointslices.json"),
            events(SLICES, "watch_1.ndjson"),
            events(SLICES, "watch_gone.ndjson"),
            json("GET", SLICES, 200, "endpointslices_relist.json"),
            events(SLICES, "watch_2.ndjson"),
        ],
    );
    let source = source(client);
    let status = source.status();
    let mut changes = source.changes();

    // The list: a, b ready, c ready in the second slice; x is not ready.
    let listed = take(&mut changes, 3).await;
    assert_eq!(
        listed,
        vec![
            Change::Insert(ep("a", "10.1.0.11")),
            Change::Insert(ep("b", "10.1.0.12")),
            Change::Insert(ep("c", "10.1.0.13")),
        ]
    );
    assert_eq!(status.ready(), 3);
    // The watch: c terminating but serving drains.
    assert_eq!(
        take(&mut changes, 1).await,
        vec![Change::Update(ep("c", "10.1.0.13").draining())]
    );
    assert_eq!(status.ready(), 2);
    // 410 on the re-opened watch: the re-list yields c's removal and d's
    // arrival only, nothing for a and b.
    assert_eq!(
        take(&mut changes, 2).await,
        vec![
            Change::Remove("convoy-node-7d9f-c".into()),
            Change::Insert(ep("d", "10.1.0.14"))
        ]
    );
    assert_eq!(status.relists(), 1);
    // The slice holding a, b and d deleted.
    let mut removed = take(&mut changes, 3).await;
    removed.sort_by(|x, y| x.id().cmp(y.id()));
    assert_eq!(
        removed,
        ["a", "b", "d"]
            .iter()
            .map(|p| Change::Remove(format!("convoy-node-7d9f-{p}")))
            .collect::<Vec<_>>()
    );
    assert_eq!(status.ready(), 0);

    drop(changes);
    let seen = server.await.unwrap();
    let selector = Some("kubernetes.io/service-name=convoy-node".to_owned());
    assert!(seen.iter().all(|s| s.param("labelSelector") == selector));
    // The first watch starts at the list's version and asks for bookmarks.
    assert_eq!(seen[1].param("watch").as_deref(), Some("true"));
    assert_eq!(seen[1].param("resourceVersion").as_deref(), Some("2000"));
    assert_eq!(
        seen[1].param("allowWatchBookmarks").as_deref(),
        Some("true")
    );
    // The second resumes at the bookmark's version, not the last event's.
    assert_eq!(seen[2].param("resourceVersion").as_deref(), Some("2100"));
    // After the re-list, the watch starts at the new list's version.
    assert_eq!(seen[3].param("watch"), None, "a list");
    assert_eq!(seen[4].param("resourceVersion").as_deref(), Some("2500"));
}

#[tokio::test(start_paused = true)]
async fn a_watch_request_answered_410_relists() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SLICES, 200, "endpointslices.json"),
            json("GET", SLICES, 410, "gone.json"),
            json("GET", SLICES, 200, "endpointslices_relist.json"),
        ],
    );
    let mut changes = source(client).changes();
    take(&mut changes, 3).await;
    assert_eq!(
        take(&mut changes, 2).await,
        vec![
            Change::Remove("convoy-node-7d9f-c".into()),
            Change::Insert(ep("d", "10.1.0.14"))
        ]
    );
    drop(changes);
    let seen = server.await.unwrap();
    assert_eq!(seen[2].param("watch"), None, "the third request is a list");
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_api_server_keeps_the_endpoints_and_retries_with_backoff() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SLICES, 200, "endpointslices.json"),
            down("GET", SLICES),
            down("GET", SLICES),
            events(SLICES, "watch_1.ndjson"),
        ],
    );
    let source = source(client)
        .backoff(Duration::from_secs(1), Duration::from_secs(8))
        .unwrap();
    let status = source.status();
    let mut changes = source.changes();
    take(&mut changes, 3).await;

    let started = Instant::now();
    for _ in 0..2 {
        let error = changes.next().await.unwrap().unwrap_err();
        assert_eq!(error.source_name(), "kubernetes");
        assert!(error.to_string().contains("unreachable"), "{error}");
    }
    assert!(status.health().is_failing());
    assert_eq!(status.ready(), 3, "the last snapshot is kept");
    // The watch resumes where it was, with no re-list and no removal.
    assert_eq!(
        take(&mut changes, 1).await,
        vec![Change::Update(ep("c", "10.1.0.13").draining())]
    );
    assert!(!status.health().is_failing());
    // Backoff 1 s then 2 s before the successful watch.
    assert_eq!(started.elapsed(), Duration::from_secs(3));
    drop(changes);
    let seen = server.await.unwrap();
    assert!(seen[1..]
        .iter()
        .all(|s| s.param("resourceVersion").as_deref() == Some("2000")));
}

#[tokio::test(start_paused = true)]
async fn a_silent_watch_is_reopened_after_its_timeout_and_the_endpoints_kept() {
    let (client, handle) = mock_client();
    let server = replay(
        handle,
        vec![
            json("GET", SLICES, 200, "endpointslices.json"),
            ("GET", SLICES.into(), Reply::Silent),
            events(SLICES, "watch_1.ndjson"),
        ],
    );
    let source = source(client)
        .watch_timeout(60)
        .unwrap()
        .backoff(Duration::from_secs(1), Duration::from_secs(1))
        .unwrap();
    let status = source.status();
    let mut changes = source.changes();
    take(&mut changes, 3).await;
    let started = Instant::now();
    let error = changes.next().await.unwrap().unwrap_err();
    assert!(error.to_string().contains("silent"), "{error}");
    assert_eq!(
        started.elapsed(),
        Duration::from_secs(65),
        "the timeout plus 5 s"
    );
    assert_eq!(status.ready(), 3, "the endpoints are kept");
    // Re-opened from the same version, after the backoff.
    assert_eq!(
        take(&mut changes, 1).await,
        vec![Change::Update(ep("c", "10.1.0.13").draining())]
    );
    drop(changes);
    let seen = server.await.unwrap();
    assert_eq!(seen[2].param("resourceVersion").as_deref(), Some("2000"));
    assert_eq!(seen[1].param("timeoutSeconds").as_deref(), Some("60"));
}

fn slice_with(conditions: Option<EndpointConditions>) -> EndpointSlice {
    EndpointSlice {
        address_type: "IPv4".into(),
        endpoints: vec![SliceEndpoint {
            addresses: vec!["10.1.0.7".into()],
            conditions,
            ..SliceEndpoint::default()
        }],
        ports: Some(vec![EndpointPort {
            name: Some("http".into()),
            port: Some(8080),
            ..EndpointPort::default()
        }]),
        ..EndpointSlice::default()
    }
}

#[test]
fn every_combination_of_conditions_maps_by_the_documented_table() {
    let values = [None, Some(false), Some(true)];
    for ready in values {
        for serving in values {
            for terminating in values {
                let slice = slice_with(Some(EndpointConditions {
                    ready,
                    serving,
                    terminating,
                }));
                let got = slice_endpoints(&slice, Some("http"), "1")
                    .first()
                    .map(|e| e.state);
                // Nil ready / serving mean true, nil terminating means false.
                let (r, s, t) = (
                    ready != Some(false),
                    serving != Some(false),
                    terminating == Some(true),
                );
                let want = if !t && r && s {
                    Some(EndpointState::Ready)
                } else if t && s {
                    Some(EndpointState::Draining)
                } else {
                    None
                };
                assert_eq!(
                    got, want,
                    "ready {ready:?} serving {serving:?} terminating {terminating:?}"
                );
            }
        }
    }
    // No conditions at all: ready.
    let got = slice_endpoints(&slice_with(None), None, "1");
    assert_eq!(got[0].state, EndpointState::Ready);
    assert_eq!(
        got[0].id, "10.1.0.7:8080",
        "no targetRef: the address is the id"
    );
    // A port name the slice lacks, or an FQDN address: nothing.
    assert!(slice_endpoints(&slice_with(None), Some("grpc"), "1").is_empty());
    let mut fqdn = slice_with(None);
    fqdn.endpoints[0].addresses = vec!["node.example".into()];
    assert!(slice_endpoints(&fqdn, None, "1").is_empty());
}

#[tokio::test]
async fn invalid_configuration_names_the_field() {
    let (client, _handle) = mock_client();
    let e = EndpointSliceSource::new(client.clone(), "convoy", "convoy-node", "").unwrap_err();
    assert!(e.to_string().contains("`version`"), "{e}");
    let e = EndpointSliceSource::new(client.clone(), "convoy", "-bad", "1").unwrap_err();
    assert!(e.to_string().contains("`service`"), "{e}");
    let e = source(client.clone()).watch_timeout(0).unwrap_err();
    assert!(e.to_string().contains("`watch_timeout`"), "{e}");
    let e = source(client)
        .backoff(Duration::from_secs(2), Duration::from_secs(1))
        .unwrap_err();
    assert!(e.to_string().contains("`backoff`"), "{e}");
}
