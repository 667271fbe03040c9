//! `[deployment.remote]`: a front's deployments in the server's TOML,
//! checked while the file is read (every error names its field), the
//! Kubernetes manifest's ConfigMap among them, and a front built from a
//! file forwarding by deployment and version (no root, no etcd).

use std::time::Duration;

use bytes::Bytes;
use example_multi_model::config::NodeSource;
use example_multi_model::remote::{Front, Scalers};
use example_multi_model::Config;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

const TWO_VERSIONS: &str = r#"
[[deployment]]
name = "identity"

[[deployment.version]]
name = "1"
weight = 75

[[deployment.version]]
name = "2"
weight = 25

[deployment.remote]
static = { "1" = ["a=127.0.0.1:9001", "127.0.0.1:9002"], "2" = ["c=127.0.0.1:9003"] }
cold_start_queue = 8
cold_start_timeout = "3s"
"#;

#[test]
fn a_static_remote_deployment_is_read_with_its_versions_and_bounds() {
    let config = Config::parse(TWO_VERSIONS).unwrap();
    let d = config.deployments().next().unwrap();
    assert_eq!(
        d.model, "identity",
        "a remote deployment's model is its name"
    );
    let remote = d.remote.as_ref().unwrap();
    let NodeSource::Static(lists) = &remote.source else {
        panic!("{:?}", remote.source)
    };
    assert_eq!(lists["1"].len(), 2);
    assert_eq!(
        lists["1"][1].0, "127.0.0.1:9002",
        "an address alone is its id"
    );
    assert_eq!(lists["2"][0].0, "c");
    assert_eq!(remote.cold_start_queue, 8);
    assert_eq!(remote.cold_start_timeout, Duration::from_secs(3));
    assert_eq!(remote.eject_after, 3);
}

#[test]
fn remote_errors_name_their_field() {
    let base = "[[deployment]]\nname = \"m\"\n[deployment.remote]\n";
    let cases = [
        ("", "exactly one source"),
        (
            "static = { \"1\" = [] }\netcd = { url = \"http://e:2379\" }\n",
            "exactly one source",
        ),
        ("static = { \"1\" = [\"a=nowhere\"] }\n", "static.1"),
        ("static = { \"1\" = [\"a=127.0.0.1:1\", \"a=127.0.0.1:2\"] }\n", "appears twice"),
        ("static = { \"2\" = [\"127.0.0.1:1\"] }\n", "remote.static"),
        ("etcd = { url = \"etcd:2379\" }\n", "etcd.url"),
        (
            "kubernetes = { namespace = \"n\", services = { \"9\" = \"s\" } }\n",
            "remote.kubernetes.services",
        ),
        ("static = { \"1\" = [] }\ncold_start_queue = 0\n", "cold_start_queue"),
        (
            "static = { \"1\" = [] }\ncold_start_timeout = \"0\"\n",
            "cold_start_timeout",
        ),
        (
            "static = { \"1\" = [] }\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmin = 0\nmax = 2\n",
            "autoscale.min",
        ),
        (
            "etcd = { url = \"http://e:2379\" }\n[[deployment.remote.autoscale]]\nversion = \"7\"\nmax = 2\n",
            "autoscale.version",
        ),
        (
            "etcd = { url = \"http://e:2379\" }\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmin = 3\nmax = 2\n",
            "autoscale.min",
        ),
        (
            "etcd = { url = \"http://e:2379\" }\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmax = 2\nkubernetes = { deployment = \"d\" }\n",
            "autoscale.kubernetes",
        ),
        ("etcd = { url = \"http://e:2379\" }\nbogus = 1\n", "bogus"),
    ];
    for (text, field) in cases {
        let err = Config::parse(&format!("{base}{text}")).unwrap_err();
        assert!(err.to_string().contains(field), "{text:?}: {err}");
        assert!(err.to_string().contains("line "), "{text:?}: {err}");
    }
    // A front mirrors no request: no drift check of a remote canary.
    let err = Config::parse(&format!(
        "{TWO_VERSIONS}[deployment.rollout]\nsteps = [50, 100]\n[deployment.rollout.drift]\nmin_cosine = 0.9\n"
    ))
    .unwrap_err();
    assert!(err.to_string().contains("rollout.drift"), "{err}");
    // A registry source is the nodes' business.
    let err = Config::parse(
        "[server.registry]\nuri = \"http://r:5000\"\n[[deployment]]\nname = \"m\"\nsource = \"models:/m@prod\"\n[deployment.remote]\netcd = { url = \"http://e:2379\" }\n",
    )
    .unwrap_err();
    assert!(err.to_string().contains("remote"), "{err}");
}

/// The ConfigMap of `deploy/kubernetes/30-front.yaml` is a configuration
/// the front reads.
#[test]
fn the_kubernetes_front_configmap_is_a_valid_front_configuration() {
    let yaml = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/kubernetes/30-front.yaml"),
    )
    .unwrap();
    // The block scalar after `front.toml: |`, indented by four spaces.
    let text: String = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("front.toml: |"))
        .skip(1)
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| format!("{}\n", l.strip_prefix("    ").unwrap_or(l)))
        .collect();
    assert!(text.contains("[deployment.remote]"), "{text}");
    let config = Config::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let d = config.deployments().next().unwrap();
    let remote = d.remote.as_ref().unwrap();
    let NodeSource::Kubernetes(k) = &remote.source else {
        panic!("{:?}", remote.source)
    };
    assert_eq!(k.services["1"], "convoy-node");
    // gRPC served and forwarded to the nodes' port named grpc.
    assert!(config.server.grpc_addr.is_some());
    assert_eq!(k.grpc_port.as_deref(), Some("grpc"));
    let scale = &remote.autoscale[0];
    assert_eq!(
        scale.kubernetes.as_ref().map(|k| k.deployment.as_str()),
        Some("convoy-node")
    );
    // The node Deployment it scales and the Service it reads are the
    // manifests' own.
    let nodes = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../deploy/kubernetes/20-node.yaml"),
    )
    .unwrap();
    assert!(nodes.contains("name: convoy-node\n"));
}

/// A front's answer: status, `x-convoy-version`, body.
async fn send(base: &str, path: &str, pin: Option<&str>) -> (u16, Option<String>, String) {
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let mut req = hyper::Request::get(format!("{base}{path}"));
    if let Some(v) = pin {
        req = req.header("x-convoy-version", v);
    }
    let rsp = tokio::time::timeout(
        Duration::from_secs(10),
        client.request(req.body(Full::new(Bytes::new())).unwrap()),
    )
    .await
    .expect("an answer within 10 s")
    .expect("the front answers");
    let status = rsp.status().as_u16();
    let version = rsp
        .headers()
        .get("x-convoy-version")
        .map(|v| v.to_str().unwrap().to_string());
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    (status, version, String::from_utf8_lossy(&body).into())
}

/// A tiny node: answers every request with its own name.
async fn fake_node(name: &'static str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = axum::Router::new().fallback(move || async move { name });
    tokio::spawn(async move { axum::serve(listener, app).await });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_front_from_a_file_splits_by_weight_pins_versions_and_routes_by_model() {
    let (a, b, c) = (
        fake_node("a").await,
        fake_node("b").await,
        fake_node("c").await,
    );
    // The two-version deployment over these nodes, and another beside it.
    let text = TWO_VERSIONS.replace(
        r#"static = { "1" = ["a=127.0.0.1:9001", "127.0.0.1:9002"], "2" = ["c=127.0.0.1:9003"] }"#,
        &format!(r#"static = {{ "1" = ["a={a}"], "2" = ["b={b}"] }}"#),
    ) + &format!(
        "\n[[deployment]]\nname = \"other\"\n\n[deployment.remote]\nstatic = {{ \"1\" = [\"c={c}\"] }}\n"
    );
    let config = Config::parse(&text).unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, front.router()).await });

    // Smooth weighted round robin: 75/25 exactly over 40 requests.
    let mut by_version = std::collections::BTreeMap::<String, usize>::new();
    for _ in 0..40 {
        let (status, version, body) = send(&base, "/v1/models/identity/infer", None).await;
        assert_eq!(status, 200, "{body}");
        let version = version.expect("the answer names its version");
        assert_eq!(body, if version == "1" { "a" } else { "b" });
        *by_version.entry(version).or_default() += 1;
    }
    assert_eq!(by_version["1"], 30, "{by_version:?}");
    assert_eq!(by_version["2"], 10, "{by_version:?}");
    // Pinned by header and by a v2 path.
    for _ in 0..5 {
        assert_eq!(
            send(&base, "/v1/models/identity/infer", Some("2")).await.2,
            "b"
        );
        let (_, v, body) = send(&base, "/v2/models/identity/versions/1/infer", None).await;
        assert_eq!((v.as_deref(), body.as_str()), (Some("1"), "a"));
    }
    // A version the deployment lacks is the caller's error.
    let (status, _, body) = send(&base, "/v1/models/identity/infer", Some("9")).await;
    assert_eq!(status, 404, "{body}");
    assert!(body.contains("no version \"9\""), "{body}");
    assert_eq!(
        send(&base, "/v2/models/identity/versions/9/infer", None)
            .await
            .0,
        404
    );
    // Another deployment by its name; an unknown one is 404.
    assert_eq!(send(&base, "/v2/models/other/infer", None).await.2, "c");
    assert_eq!(send(&base, "/v2/models/nope/infer", None).await.0, 404);
    // The front's own readiness, and its view of the split.
    assert_eq!(send(&base, "/readyz", None).await.0, 200);
    let (_, _, view) = send(&base, "/front/deployments", None).await;
    let view: serde_json::Value = serde_json::from_str(&view).unwrap();
    assert_eq!(view[0]["versions"][0]["weight"], 75.0);
    assert_eq!(view[0]["versions"][1]["serving"], 1);
}

#[tokio::test]
async fn a_front_needs_a_scaler_for_each_autoscaled_version() {
    let config = Config::parse(
        "[[deployment]]\nname = \"m\"\n[deployment.remote]\netcd = { url = \"http://127.0.0.1:1\" }\n[[deployment.remote.autoscale]]\nversion = \"1\"\nmax = 2\n",
    )
    .unwrap();
    let err = Front::from_config(&config, Scalers::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("no scaler"), "{err}");
    // Kubernetes without the feature (or a cluster) fails naming it.
    let config = Config::parse(
        "[[deployment]]\nname = \"m\"\n[deployment.remote]\nkubernetes = { namespace = \"n\", services = { \"1\" = \"s\" } }\n",
    )
    .unwrap();
    let err = Front::from_config(&config, Scalers::new())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("remote.kubernetes"), "{err}");
}

/// A version with no node at all that the front does not scale: a request
/// waits its `ready_timeout` (not the longer `cold_start_timeout`, which
/// covers a node being started), then 503 with `Retry-After`.
#[tokio::test]
async fn past_the_wait_for_a_node_a_request_gets_503_with_retry_after() {
    let config = Config::parse(
        "[[deployment]]\nname = \"m\"\n[deployment.remote]\nstatic = { \"1\" = [] }\nready_timeout = \"300ms\"\ncold_start_timeout = \"1h\"\n",
    )
    .unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, front.router()).await });
    let client: Client<HttpConnector, Full<Bytes>> =
        Client::builder(TokioExecutor::new()).build_http();
    let sent = tokio::time::Instant::now();
    let rsp = client
        .get(format!("{base}/v2/models/m/infer").parse().unwrap())
        .await
        .unwrap();
    let waited = sent.elapsed();
    assert_eq!(rsp.status(), 503);
    assert_eq!(rsp.headers()["retry-after"], "1");
    let body = rsp.into_body().collect().await.unwrap().to_bytes();
    assert!(
        String::from_utf8_lossy(&body).contains("none of version 1 became ready within"),
        "{body:?}"
    );
    assert!(waited >= Duration::from_millis(300), "{waited:?}");
    // Counted on the front's own /metrics.
    let rsp = client
        .get(format!("{base}/metrics").parse().unwrap())
        .await
        .unwrap();
    let text = rsp.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&text);
    let line = text
        .lines()
        .find(|l| {
            l.starts_with("convoy_front_no_node_total")
                && l.contains("deployment=\"m\"")
                && l.contains("reason=\"timeout\"")
        })
        .unwrap_or_else(|| panic!("no refusal counted in:\n{text}"));
    assert!(line.ends_with(" 1"), "{line}");
}

/// The README's example of a front's configuration is one the front reads.
#[test]
fn the_readme_front_example_is_a_valid_configuration() {
    let readme = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../README.md"),
    )
    .unwrap();
    let section = readme
        .split("### A front's configuration")
        .nth(1)
        .expect("the README's section");
    let text = section
        .split("```toml\n")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("its TOML example");
    let config = Config::parse(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let d = config.deployments().next().unwrap();
    assert_eq!(d.versions.len(), 2);
    assert!(matches!(
        d.remote.as_ref().map(|r| &r.source),
        Some(NodeSource::Static(_))
    ));
}

/// A canary whose nodes fail: the rollout across node groups counts their
/// 5xx answers (passed to the callers unchanged) and rolls back, leaving
/// every request on the stable version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_to_failing_nodes_rolls_back() {
    let good = fake_node("good").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let bad = listener.local_addr().unwrap();
    // Up (its health probe passes), but every inference fails.
    let app = axum::Router::new()
        .route("/v2/health/ready", axum::routing::get(|| async { "ready" }))
        .fallback(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "broken") });
    tokio::spawn(async move { axum::serve(listener, app).await });
    let text = format!(
        "[[deployment]]\nname = \"identity\"\n[[deployment.version]]\nname = \"1\"\n[[deployment.version]]\nname = \"2\"\n[deployment.rollout]\nsteps = [50, 100]\nstep = \"300ms\"\nmin_samples = 5\n[deployment.remote]\nstatic = {{ \"1\" = [\"good={good}\"], \"2\" = [\"bad={bad}\"] }}\n"
    );
    let config = Config::parse(&text).unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let rollout = front.deployments()[0].rollout().unwrap().clone();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, front.router()).await });
    let mut failed_on_2 = 0;
    for _ in 0..2_000 {
        if rollout.state() == convoy_router::rollout::RolloutState::RolledBack {
            break;
        }
        let (status, version, body) = send(&base, "/v1/models/identity/infer", None).await;
        if version.as_deref() == Some("2") {
            // The node's own answer, passed through.
            assert_eq!((status, body.as_str()), (500, "broken"));
            failed_on_2 += 1;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    assert_eq!(
        rollout.state(),
        convoy_router::rollout::RolloutState::RolledBack
    );
    assert!(failed_on_2 > 0);
    for _ in 0..10 {
        let (status, version, _) = send(&base, "/v1/models/identity/infer", None).await;
        assert_eq!((status, version.as_deref()), (200, Some("1")));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_is_413_and_a_broken_body_is_400() {
    use tower::ServiceExt;
    let node = fake_node("a").await;
    let text = format!(
        "[server]\nbody_limit = 64\n\n[[deployment]]\nname = \"identity\"\n\n\
         [deployment.remote]\nstatic = {{ \"1\" = [\"a={node}\"] }}\n"
    );
    let config = Config::parse(&text).unwrap();
    let front = Front::from_config(&config, Scalers::new()).await.unwrap();
    let router = front.router();
    let call = |body: axum::body::Body| {
        let router = router.clone();
        async move {
            let req = hyper::Request::post("/v1/models/identity/infer")
                .body(body)
                .unwrap();
            let rsp = router.oneshot(req).await.unwrap();
            let status = rsp.status();
            let text = rsp.into_body().collect().await.unwrap().to_bytes();
            (status.as_u16(), String::from_utf8_lossy(&text).into_owned())
        }
    };
    // Within the limit: forwarded.
    let (status, body) = call(axum::body::Body::from("{}")).await;
    assert_eq!((status, body.as_str()), (200, "a"));
    // Over it, even without a declared length: 413, naming the limit.
    let chunks = (0..10).map(|_| Ok::<_, std::io::Error>(Bytes::from(vec![b' '; 16])));
    let (status, body) = call(axum::body::Body::from_stream(futures::stream::iter(chunks))).await;
    assert_eq!(status, 413, "{body}");
    assert!(body.contains("64 bytes"), "{body}");
    // Broken off by the client: its error, 400, not "too large".
    let chunks = vec![
        Ok(Bytes::from_static(b"{\"inputs\"")),
        Err(std::io::Error::other("the client went away")),
    ];
    let (status, body) = call(axum::body::Body::from_stream(futures::stream::iter(chunks))).await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("cannot read the request body"), "{body}");
}
