//! Property: whatever the API server sends — slices modified and deleted,
//! bookmarks, watches ending, 410 Gone and re-lists — the changes the
//! EndpointSliceSource yields, applied in order, leave a front holding
//! exactly the endpoints of the slices as they stand.

mod support;

use std::collections::BTreeMap;

use convoy_kube::EndpointSliceSource;
use convoy_remote::{EndpointSource, EndpointState, EndpointTable};
use futures::StreamExt;
use proptest::prelude::*;
use serde_json::{json, Value};
use support::{mock_client, replay, Reply, Step};
use tokio::time::Duration;

const SLICES: &str = "/apis/discovery.k8s.io/v1/namespaces/convoy/endpointslices";
const PODS: u8 = 6;

/// A pod's conditions in its slice.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Cond {
    Ready,
    NotReady,
    TerminatingServing,
    TerminatingGone,
}

#[derive(Debug, Clone)]
enum Op {
    /// Pod `pod` (in slice `pod % 2`) gets `cond`, or leaves (`None`).
    Set(u8, Option<Cond>),
    /// Slice `n` is deleted (its pods leave).
    Delete(u8),
    Bookmark,
    /// The watch ends (server timeout); the source re-opens it.
    End,
    /// The next watch answers 410; the source re-lists.
    Gone,
}

fn cond() -> impl Strategy<Value = Option<Cond>> {
    prop_oneof![
        Just(None),
        Just(Some(Cond::Ready)),
        Just(Some(Cond::NotReady)),
        Just(Some(Cond::TerminatingServing)),
        Just(Some(Cond::TerminatingGone)),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..PODS, cond()).prop_map(|(p, c)| Op::Set(p, c)),
        1 => (0u8..2).prop_map(Op::Delete),
        1 => Just(Op::Bookmark),
        1 => Just(Op::End),
        1 => Just(Op::Gone),
    ]
}

type Slices = BTreeMap<u8, BTreeMap<u8, Cond>>;

fn slice_json(n: u8, pods: &BTreeMap<u8, Cond>, rv: u64) -> Value {
    let endpoints: Vec<Value> = pods
        .iter()
        .map(|(p, c)| {
            let (ready, serving, terminating) = match c {
                Cond::Ready => (true, true, false),
                Cond::NotReady => (false, false, false),
                Cond::TerminatingServing => (false, true, true),
                Cond::TerminatingGone => (false, false, true),
            };
            json!({
                "addresses": [format!("10.1.0.{p}")],
                "conditions": { "ready": ready, "serving": serving, "terminating": terminating },
                "targetRef": { "kind": "Pod", "name": format!("pod-{p}") },
            })
        })
        .collect();
    json!({
        "kind": "EndpointSlice",
        "apiVersion": "discovery.k8s.io/v1",
        "metadata": { "name": format!("slice-{n}"), "resourceVersion": rv.to_string() },
        "addressType": "IPv4",
        "ports": [{ "name": "http", "port": 8080 }],
        "endpoints": endpoints,
    })
}

fn list(slices: &Slices, rv: u64) -> Step {
    let items: Vec<Value> = slices
        .iter()
        .map(|(n, pods)| slice_json(*n, pods, rv))
        .collect();
    let body = json!({ "kind": "EndpointSliceList", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": rv.to_string() }, "items": items });
    ("GET", SLICES.into(), Reply::Json(200, body.to_string()))
}

/// The script the server answers with, and the slices it ends with.
fn script(initial: &Slices, ops: &[Op]) -> (Vec<Step>, Slices) {
    let mut slices = initial.clone();
    let mut rv = 10;
    let mut steps = vec![list(&slices, rv)];
    let mut events = String::new();
    let flush = |events: &mut String, steps: &mut Vec<Step>| {
        steps.push(("GET", SLICES.into(), Reply::Events(std::mem::take(events))));
    };
    for op in ops {
        rv += 1;
        match op {
            Op::Set(p, c) => {
                let n = p % 2;
                let pods = slices.entry(n).or_default();
                match c {
                    Some(c) => pods.insert(*p, *c),
                    None => pods.remove(p),
                };
                let event = json!({ "type": "MODIFIED", "object": slice_json(n, &slices[&n], rv) });
                events.push_str(&format!("{event}\n"));
            }
            Op::Delete(n) => {
                if let Some(pods) = slices.remove(n) {
                    let event = json!({ "type": "DELETED", "object": slice_json(*n, &pods, rv) });
                    events.push_str(&format!("{event}\n"));
                }
            }
            Op::Bookmark => {
                let event = json!({ "type": "BOOKMARK", "object": { "kind": "EndpointSlice", "apiVersion": "discovery.k8s.io/v1", "metadata": { "resourceVersion": rv.to_string() } } });
                events.push_str(&format!("{event}\n"));
            }
            Op::End => flush(&mut events, &mut steps),
            Op::Gone => {
                let gone = json!({ "type": "ERROR", "object": { "kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Expired", "code": 410 } });
                events.push_str(&format!("{gone}\n"));
                flush(&mut events, &mut steps);
                steps.push(list(&slices, rv));
            }
        }
    }
    flush(&mut events, &mut steps);
    (steps, slices)
}

fn expected(slices: &Slices) -> BTreeMap<String, EndpointState> {
    slices
        .values()
        .flatten()
        .filter_map(|(p, c)| {
            let state = match c {
                Cond::Ready => EndpointState::Ready,
                Cond::TerminatingServing => EndpointState::Draining,
                _ => return None,
            };
            Some((format!("pod-{p}"), state))
        })
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn applied_changes_equal_the_slices_as_they_stand(
        initial in proptest::collection::btree_map(0..PODS, cond(), 0..PODS as usize),
        ops in proptest::collection::vec(op(), 0..24),
    ) {
        let mut slices = Slices::new();
        for (p, c) in initial.into_iter().filter_map(|(p, c)| c.map(|c| (p, c))) {
            slices.entry(p % 2).or_default().insert(p, c);
        }
        let (steps, end) = script(&slices, &ops);
        let want = expected(&end);
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build().unwrap();
        let got = runtime.block_on(async move {
            let (client, handle) = mock_client();
            let server = replay(handle, steps);
            let mut changes = EndpointSliceSource::new(client, "convoy", "convoy-node", "1").unwrap().changes();
            let mut table = EndpointTable::new();
            // The script is over when the source first fails: the mock is
            // closed. Bounded by count and by (paused) time.
            for _ in 0..1_000 {
                let next = tokio::time::timeout(Duration::from_secs(60), changes.next()).await;
                match next.expect("the source goes on").expect("the stream never ends") {
                    Ok(change) => { table.apply(change); }
                    Err(_) => break,
                }
            }
            server.await.unwrap();
            table.iter().map(|e| (e.id.clone(), e.state)).collect::<BTreeMap<_, _>>()
        });
        prop_assert_eq!(got, want);
    }
}
