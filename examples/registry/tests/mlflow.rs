//! Against a real MLflow tracking server (from the project's `.venv`,
//! installed by `scripts/setup.sh`), started on a free loopback port with a
//! sqlite store and a local artifact root, stopped afterwards.

#[path = "support/mlflow.rs"]
mod support;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use example_registry::{
    ModelCache, ModelSource, RegistryError, RegistryErrorKind, RegistryEvent, Selector, Stage,
    Verify, Watcher,
};
use support::Mlflow;

/// A model folder whose model file holds `body`.
fn model_dir(root: &Path, name: &str, body: &str) -> PathBuf {
    let dir = root.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("model.json"),
        r#"{"name": "m", "file": "model.pt"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("model.pt"), body).unwrap();
    std::fs::write(dir.join("labels.txt"), "cat\ndog\n").unwrap();
    dir
}

/// Stands in for the server's check (load the TorchScript, warm up): a
/// model file starting with "ok" loads.
fn verifier() -> Arc<Verify> {
    Arc::new(|dir: &Path| {
        let body = std::fs::read_to_string(dir.join("model.pt"))
            .map_err(|e| RegistryError::verification(e.to_string()))?;
        if body.starts_with("ok") {
            Ok(())
        } else {
            Err(RegistryError::verification(
                "the TorchScript file does not load",
            ))
        }
    })
}

fn mlflow_source(text: &str) -> (String, Selector) {
    match text.parse::<ModelSource>().unwrap() {
        ModelSource::Mlflow { name, selector } => (name, selector),
        other => panic!("not an MLflow source: {other:?}"),
    }
}

async fn next_event(rx: &mut tokio::sync::mpsc::Receiver<RegistryEvent>) -> RegistryEvent {
    tokio::time::timeout(Duration::from_secs(60), rx.recv())
        .await
        .expect("an event within 60 s")
        .expect("the watcher runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uris_resolve_download_verify_and_promotions_are_followed() {
    let tmp = tempfile::tempdir().unwrap();
    let server = Mlflow::start(&tmp.path().join("mlflow"));
    let client = server.client();
    let cache = ModelCache::new(tmp.path().join("cache"));

    let v1 = client
        .publish_dir("resnet50", &model_dir(tmp.path(), "v1", "ok v1"))
        .await
        .unwrap();
    let v2 = client
        .publish_dir("resnet50", &model_dir(tmp.path(), "v2", "ok v2"))
        .await
        .unwrap();
    assert_eq!((v1.version, v2.version), (1, 2));
    client.set_alias("resnet50", "champion", 1).await.unwrap();
    client
        .transition_stage("resnet50", 1, Stage::Production, true)
        .await
        .unwrap();

    // Every URI form resolves.
    for (uri, want) in [
        ("models:/resnet50/2", 2),
        ("models:/resnet50/Production", 1),
        ("models:/resnet50@champion", 1),
    ] {
        let (name, selector) = mlflow_source(uri);
        let got = client.resolve(&name, &selector).await.unwrap();
        assert_eq!(got.version, want, "{uri}");
    }

    // Missing things are errors that name them.
    for (uri, names) in [
        ("models:/nosuchmodel/1", "nosuchmodel"),
        ("models:/resnet50/99", "99"),
        ("models:/resnet50@nosuchalias", "nosuchalias"),
        ("models:/resnet50/Staging", "Staging"),
    ] {
        let (name, selector) = mlflow_source(uri);
        let err = client.resolve(&name, &selector).await.unwrap_err();
        assert_eq!(err.kind(), RegistryErrorKind::NotFound, "{uri}: {err}");
        assert!(err.to_string().contains(names), "{uri}: {err}");
    }

    // Download into the cache, verified; a second fetch is served from it.
    let dir = cache.fetch(&client, &v1, &*verifier()).await.unwrap();
    assert_eq!(dir, tmp.path().join("cache/resnet50/1"));
    assert_eq!(
        std::fs::read_to_string(dir.join("model.pt")).unwrap(),
        "ok v1"
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("labels.txt")).unwrap(),
        "cat\ndog\n"
    );
    assert!(cache.contains("resnet50", 1));

    // Promotion by stage: v2 to Production archives v1 (no stage conflict),
    // and a watcher on the stage announces v2, verified.
    let watcher = Watcher::new(
        client.clone(),
        cache.clone(),
        "resnet50",
        Selector::Stage(Stage::Production),
        Duration::from_millis(200),
        verifier(),
    );
    let (_handle, mut events) = watcher.spawn(Some(1));
    client
        .transition_stage("resnet50", 2, Stage::Production, true)
        .await
        .unwrap();
    let old = client
        .resolve("resnet50", &Selector::Version(1))
        .await
        .unwrap();
    assert_eq!(old.stage, "Archived");
    match next_event(&mut events).await {
        RegistryEvent::NewVersion {
            from,
            version,
            path,
        } => {
            assert_eq!((from, version.version), (Some(1), 2));
            assert_eq!(
                std::fs::read_to_string(path.join("model.pt")).unwrap(),
                "ok v2"
            );
        }
        other => panic!("expected v2, got {other:?}"),
    }

    // A version whose model does not load is refused, once, with the
    // reason; v2 stays the current one and nothing broken is cached.
    let bad = client
        .publish_dir("resnet50", &model_dir(tmp.path(), "v3", "garbage"))
        .await
        .unwrap();
    client
        .transition_stage("resnet50", bad.version, Stage::Production, true)
        .await
        .unwrap();
    match next_event(&mut events).await {
        RegistryEvent::Rejected { version, error } => {
            assert_eq!(version, 3);
            assert_eq!(error.kind(), RegistryErrorKind::Verification);
            assert!(error.to_string().contains("does not load"), "{error}");
        }
        other => panic!("expected v3 refused, got {other:?}"),
    }
    assert!(!cache.contains("resnet50", 3));
    assert!(!tmp.path().join("cache/resnet50/3").exists());

    // A model without a manifest is refused by the cache's own check.
    let no_manifest = tmp.path().join("bare");
    std::fs::create_dir_all(&no_manifest).unwrap();
    std::fs::write(no_manifest.join("model.pt"), "ok").unwrap();
    let v4 = client.publish_dir("resnet50", &no_manifest).await.unwrap();
    let err = cache.fetch(&client, &v4, &*verifier()).await.unwrap_err();
    assert_eq!(err.kind(), RegistryErrorKind::Verification);
    assert!(err.to_string().contains("manifest"), "{err}");

    // Promotion by alias is followed the same way.
    let watcher = Watcher::new(
        client.clone(),
        cache.clone(),
        "resnet50",
        Selector::Alias("champion".into()),
        Duration::from_millis(200),
        verifier(),
    );
    let (_handle, mut events) = watcher.spawn(Some(1));
    client.set_alias("resnet50", "champion", 2).await.unwrap();
    match next_event(&mut events).await {
        RegistryEvent::NewVersion { from, version, .. } => {
            assert_eq!((from, version.version), (Some(1), 2))
        }
        other => panic!("expected the alias to move to v2, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_registry_going_away_pauses_watching_until_it_returns() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = Mlflow::start(&tmp.path().join("mlflow"));
    let client = server.client();
    let cache = ModelCache::new(tmp.path().join("cache"));
    client
        .publish_dir("minilm", &model_dir(tmp.path(), "v1", "ok v1"))
        .await
        .unwrap();
    client.set_alias("minilm", "live", 1).await.unwrap();

    // The watcher gives up on each poll quickly while the server is away.
    let watcher = Watcher::new(
        client.clone().with_timeout(Duration::from_secs(3)),
        cache,
        "minilm",
        Selector::Alias("live".into()),
        Duration::from_millis(200),
        verifier(),
    );
    let (_handle, mut events) = watcher.spawn(Some(1));

    server.stop();
    match next_event(&mut events).await {
        RegistryEvent::Unavailable { error } => {
            assert_eq!(error.kind(), RegistryErrorKind::Unreachable, "{error}")
        }
        other => panic!("expected the registry to be unavailable, got {other:?}"),
    }
    // Reported once, not on every poll.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), events.recv())
            .await
            .is_err(),
        "repeated events while the registry is down"
    );

    server.restart();
    match next_event(&mut events).await {
        RegistryEvent::Recovered => {}
        other => panic!("expected recovery, got {other:?}"),
    }
    // And it follows promotions again.
    let v2 = client
        .publish_dir("minilm", &model_dir(tmp.path(), "v2", "ok v2"))
        .await
        .unwrap();
    client
        .set_alias("minilm", "live", v2.version)
        .await
        .unwrap();
    match next_event(&mut events).await {
        RegistryEvent::NewVersion { from, version, .. } => {
            assert_eq!((from, version.version), (Some(1), 2))
        }
        other => panic!("expected v2, got {other:?}"),
    }
}
