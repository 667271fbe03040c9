//! `deploy/kubernetes/`: every manifest parses into its k8s-openapi type
//! without losing a field, the pieces fit together, and the front's Role
//! grants exactly the calls convoy-kube makes ([`API_CALLS`]).

use std::collections::BTreeSet;
use std::path::PathBuf;

use convoy_kube::API_CALLS;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

#[derive(Default)]
struct Manifests {
    files: Vec<String>,
    namespaces: Vec<Namespace>,
    service_accounts: Vec<ServiceAccount>,
    roles: Vec<Role>,
    bindings: Vec<RoleBinding>,
    config_maps: Vec<ConfigMap>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
}

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/kubernetes")
}

/// Parses `doc` as `T` and checks that serializing it back gives the same
/// document: a misspelt or misplaced field (dropped by the typed parse)
/// fails here.
fn typed<T: DeserializeOwned + Serialize>(doc: &Value, at: &str) -> T {
    let parsed: T = serde_json::from_value(doc.clone()).unwrap_or_else(|e| panic!("{at}: {e}"));
    let back = serde_json::to_value(&parsed).unwrap();
    if let Some(field) = lost(doc, &back, String::new()) {
        panic!("{at}: `{field}` is unknown to k8s-openapi or not where it belongs");
    }
    parsed
}

/// The first field of `doc` that `back` lacks or holds differently.
fn lost(doc: &Value, back: &Value, at: String) -> Option<String> {
    match (doc, back) {
        (Value::Object(d), Value::Object(b)) => d.iter().find_map(|(k, v)| match b.get(k) {
            Some(w) => lost(v, w, format!("{at}.{k}")),
            None => Some(format!("{at}.{k}")),
        }),
        (Value::Array(d), Value::Array(b)) if d.len() == b.len() => d
            .iter()
            .zip(b)
            .enumerate()
            .find_map(|(i, (v, w))| lost(v, w, format!("{at}[{i}]"))),
        _ => (doc != back).then_some(at),
    }
}

fn load() -> Manifests {
    let mut m = Manifests::default();
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir())
        .expect("deploy/kubernetes exists")
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    paths.sort();
    for path in paths {
        let text = std::fs::read_to_string(&path).unwrap();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let docs: Vec<Value> =
            serde_saphyr::from_multiple(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        for (i, doc) in docs.into_iter().enumerate() {
            if doc.is_null() {
                continue;
            }
            let at = format!("{name} document {i}");
            match (doc["apiVersion"].as_str(), doc["kind"].as_str()) {
                (Some("v1"), Some("Namespace")) => m.namespaces.push(typed(&doc, &at)),
                (Some("v1"), Some("ServiceAccount")) => m.service_accounts.push(typed(&doc, &at)),
                (Some("v1"), Some("ConfigMap")) => m.config_maps.push(typed(&doc, &at)),
                (Some("v1"), Some("Service")) => m.services.push(typed(&doc, &at)),
                (Some("apps/v1"), Some("Deployment")) => m.deployments.push(typed(&doc, &at)),
                (Some("rbac.authorization.k8s.io/v1"), Some("Role")) => {
                    m.roles.push(typed(&doc, &at))
                }
                (Some("rbac.authorization.k8s.io/v1"), Some("RoleBinding")) => {
                    m.bindings.push(typed(&doc, &at))
                }
                other => panic!("{at}: unexpected kind {other:?}"),
            }
        }
        m.files.push(name);
    }
    m
}

fn deployment<'a>(m: &'a Manifests, name: &str) -> &'a Deployment {
    m.deployments
        .iter()
        .find(|d| d.metadata.name.as_deref() == Some(name))
        .unwrap_or_else(|| panic!("no Deployment {name}"))
}

fn pod_spec(d: &Deployment) -> &PodSpec {
    d.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
}

#[test]
fn every_manifest_parses_into_its_type_without_losing_a_field() {
    let m = load();
    assert!(m.files.len() >= 4, "{:?}", m.files);
    assert_eq!(m.namespaces.len(), 1);
    let ns = m.namespaces[0].metadata.name.clone();
    // Everything else is in that namespace.
    let namespaced = m
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(m.roles.iter().map(|o| &o.metadata))
        .chain(m.bindings.iter().map(|o| &o.metadata))
        .chain(m.config_maps.iter().map(|o| &o.metadata))
        .chain(m.deployments.iter().map(|o| &o.metadata))
        .chain(m.services.iter().map(|o| &o.metadata));
    for meta in namespaced {
        assert_eq!(meta.namespace, ns, "{:?}", meta.name);
    }
}

#[test]
fn the_front_role_grants_exactly_the_calls_convoy_kube_makes() {
    let m = load();
    assert_eq!(m.roles.len(), 1, "one Role: the front's");
    let role = &m.roles[0];
    let mut granted = BTreeSet::new();
    for rule in role.rules.iter().flatten() {
        for group in rule.api_groups.iter().flatten() {
            for resource in rule.resources.iter().flatten() {
                for verb in &rule.verbs {
                    assert_ne!(verb, "*", "no wildcard verbs");
                    assert!(
                        granted.insert((group.clone(), resource.clone(), verb.clone())),
                        "{group} {resource} {verb} granted twice"
                    );
                }
            }
        }
    }
    let made: BTreeSet<(String, String, String)> = API_CALLS
        .iter()
        .map(|c| (c.group.to_owned(), c.resource.to_owned(), c.verb.to_owned()))
        .collect();
    let missing: Vec<_> = made.difference(&granted).collect();
    let extra: Vec<_> = granted.difference(&made).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}, extra {extra:?}"
    );

    // Bound to the front's ServiceAccount, which the front runs as.
    let binding = &m.bindings[0];
    assert_eq!(binding.role_ref.kind, "Role");
    assert_eq!(Some(&binding.role_ref.name), role.metadata.name.as_ref());
    let subjects = binding.subjects.as_ref().unwrap();
    assert_eq!(subjects.len(), 1);
    assert_eq!(subjects[0].kind, "ServiceAccount");
    let front = pod_spec(deployment(&m, "convoy-front"));
    assert_eq!(front.service_account_name.as_ref(), Some(&subjects[0].name));
    // The nodes get no token at all.
    let node = pod_spec(deployment(&m, "convoy-node"));
    assert_ne!(node.service_account_name, front.service_account_name);
    assert_eq!(node.automount_service_account_token, Some(false));
}

#[test]
fn the_node_is_ready_on_the_route_the_server_serves_behind_a_headless_service() {
    let m = load();
    let node = deployment(&m, "convoy-node");
    let container = &pod_spec(node).containers[0];
    let probe = container
        .readiness_probe
        .as_ref()
        .unwrap()
        .http_get
        .as_ref()
        .unwrap();
    assert_eq!(probe.port, IntOrString::String("http".into()));
    let path = probe.path.as_deref().unwrap();
    // The multi-model server's route, read from its source.
    let http = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/multi-model/src/http/mod.rs"),
    )
    .unwrap();
    assert!(
        http.contains(&format!("path = \"{path}\"")),
        "multi-model serves no {path}"
    );
    assert!(container
        .ports
        .iter()
        .flatten()
        .any(|p| p.name.as_deref() == Some("http")));

    let service = m
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("convoy-node"))
        .unwrap();
    let spec = service.spec.as_ref().unwrap();
    assert_eq!(spec.cluster_ip.as_deref(), Some("None"), "headless");
    // Its selector picks the node pods, and it names the port the
    // EndpointSliceSource reads.
    let labels = node
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .labels
        .as_ref()
        .unwrap();
    for (k, v) in spec.selector.as_ref().unwrap() {
        assert_eq!(labels.get(k), Some(v));
    }
    assert!(spec
        .ports
        .iter()
        .flatten()
        .any(|p| p.name.as_deref() == Some("http")));
    // The scale subresource the Role names is this Deployment's.
    let scale_rule = m.roles[0]
        .rules
        .iter()
        .flatten()
        .find(|r| {
            r.resources
                .iter()
                .flatten()
                .any(|x| x == "deployments/scale")
        })
        .unwrap();
    assert_eq!(
        scale_rule.resource_names,
        Some(vec!["convoy-node".to_owned()])
    );
}

#[test]
fn every_config_map_a_pod_mounts_exists() {
    let m = load();
    for d in &m.deployments {
        for volume in pod_spec(d).volumes.iter().flatten() {
            if let Some(cm) = &volume.config_map {
                assert!(
                    m.config_maps
                        .iter()
                        .any(|c| c.metadata.name == Some(cm.name.clone())),
                    "{:?} mounts a missing ConfigMap {}",
                    d.metadata.name,
                    cm.name
                );
            }
        }
    }
}
