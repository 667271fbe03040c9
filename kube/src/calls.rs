//! Every call convoy-kube makes to the API server, in RBAC's terms. The
//! manifests' Role in `deploy/kubernetes/` grants exactly these, and a test
//! checks it against this list.

/// One API call: group, resource (with `/subresource`) and verb, as a
/// Kubernetes RBAC rule names them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiCall {
    /// The API group (`""` for core).
    pub group: &'static str,
    /// The resource, `resource/subresource` for a subresource.
    pub resource: &'static str,
    /// The RBAC verb.
    pub verb: &'static str,
    /// Which part of convoy-kube makes it.
    pub by: &'static str,
}

const fn call(
    group: &'static str,
    resource: &'static str,
    verb: &'static str,
    by: &'static str,
) -> ApiCall {
    ApiCall {
        group,
        resource,
        verb,
        by,
    }
}

/// The calls, all of them. A merge patch is RBAC verb `patch`.
pub const API_CALLS: &[ApiCall] = &[
    call("apps", "deployments/scale", "get", "KubeScaler"),
    call("apps", "deployments/scale", "patch", "KubeScaler"),
    call("", "pods", "list", "KubeScaler"),
    call("", "pods", "patch", "KubeScaler"),
    call(
        "discovery.k8s.io",
        "endpointslices",
        "list",
        "EndpointSliceSource",
    ),
    call(
        "discovery.k8s.io",
        "endpointslices",
        "watch",
        "EndpointSliceSource",
    ),
    call("coordination.k8s.io", "leases", "get", "LeaderElector"),
    call("coordination.k8s.io", "leases", "create", "LeaderElector"),
    call("coordination.k8s.io", "leases", "update", "LeaderElector"),
];
