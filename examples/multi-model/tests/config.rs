//! Configuration errors name the field and its line; the checked-in
//! configurations load.

use example_multi_model::Config;

fn error(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

const HEAD: &str = "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\n";

#[test]
fn every_checked_in_config_parses() {
    for (name, text) in [
        (
            "models-test.toml",
            include_str!("../config/models-test.toml"),
        ),
        ("overload.toml", include_str!("../config/overload.toml")),
        ("registry.toml", include_str!("../config/registry.toml")),
        (
            "demo-registry.toml",
            include_str!("../config/demo-registry.toml"),
        ),
    ] {
        let c = Config::parse(text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(c.deployments().count() >= 1, "{name} has no deployment");
    }
}

#[test]
fn checked_in_configs_load() {
    for text in [
        include_str!("../config/test.toml"),
        include_str!("../config/demo.toml"),
    ] {
        let c = Config::parse(text).unwrap();
        assert!(c.deployments().count() >= 2);
    }
    let demo = Config::parse(include_str!("../config/demo.toml")).unwrap();
    let names: Vec<_> = demo.deployments().map(|d| d.name.as_str()).collect();
    for n in [
        "resnet50",
        "minilm",
        "yolov8n",
        "identity",
        "resnet50-unbatched",
        "minilm-unbatched",
        "yolov8n-unbatched",
    ] {
        assert!(names.contains(&n), "{n}");
    }
    assert!(demo
        .deployments()
        .filter(|d| d.name.ends_with("-unbatched"))
        .all(|d| d.batching.max_batch_size == 1));
}

#[test]
fn unknown_fields_are_refused_with_their_line() {
    let e = error(&format!("{HEAD}[deployment.batching]\nmax_bach_size = 4\n"));
    assert!(e.contains("line 5") && e.contains("max_bach_size"), "{e}");
}

#[test]
fn values_out_of_range_name_their_line() {
    for (extra, line, says) in [
        (
            "[deployment.batching]\nmax_batch_size = 0\n",
            5,
            "at least 1",
        ),
        (
            "[deployment.batching]\nmax_wait = \"5 parsecs\"\n",
            5,
            "unit",
        ),
        ("[deployment.batching]\nqueue_timeout = 3\n", 5, "string"),
        ("[deployment.device]\nfraction = 1.5\n", 5, "(0, 1]"),
        ("[deployment.device]\nkind = \"tpu\"\n", 5, "tpu"),
        (
            "[[deployment.version]]\nname = \"1\"\nweight = -1\n",
            6,
            "weight",
        ),
        ("[deployment.replicas]\npolicy = \"magic\"\n", 5, "magic"),
    ] {
        let e = error(&format!("{HEAD}{extra}"));
        assert!(
            e.contains(&format!("line {line}")) && e.contains(says),
            "{extra}: {e}"
        );
    }
}

#[test]
fn inconsistent_deployments_are_refused() {
    let e = error(&format!("{HEAD}[deployment.replicas]\nmin = 3\nmax = 2\n"));
    assert!(e.contains("replicas.min") && e.contains("line"), "{e}");
    let e = error(&format!("{HEAD}{HEAD}"));
    assert!(e.contains("appears twice") && e.contains("line 4"), "{e}");
    let e = error(&format!(
        "{HEAD}[[deployment.version]]\nname = \"1\"\n[deployment.rollout]\nsteps = [10, 50]\n"
    ));
    assert!(e.contains("two versions"), "{e}");
    let e = error(&format!(
        "{HEAD}[[deployment.version]]\nname = \"1\"\n[[deployment.version]]\nname = \"1\"\n"
    ));
    assert!(e.contains("twice"), "{e}");
    let e = error("[server]\n");
    assert!(e.contains("no [[deployment]]"), "{e}");
    let e = error("[[deployment]]\nname = \"a b\"\nmodel = \"identity\"\n");
    assert!(e.contains("name"), "{e}");
}

#[test]
fn defaults_fill_what_is_left_out() {
    let c = Config::parse(HEAD).unwrap();
    let d = c.deployments().next().unwrap();
    assert_eq!(d.versions.len(), 1);
    assert_eq!(d.versions[0].name, "1");
    assert!(d.batching.adaptive);
    assert_eq!(d.replicas.min, 1);
}

/// A file's relative paths are relative to its folder (as Prometheus, Envoy
/// and cargo take them); absolute ones and parsed text stay as written.
#[test]
fn a_config_files_relative_paths_are_relative_to_its_folder() {
    let dir = std::env::temp_dir().join(format!("convoy-config-paths-{}", std::process::id()));
    let folder = dir.join("etc");
    std::fs::create_dir_all(&folder).unwrap();
    let path = folder.join("server.toml");
    let text = r#"
[server]
models_dir = "../models"

[server.registry]
uri = "http://127.0.0.1:5000"
cache_dir = "cache"

[[deployment]]
name = "a"
model = "identity"

[[deployment]]
name = "b"
model = "resnet50"
source = "pkgs/resnet50"

[[deployment]]
name = "c"
model = "minilm"
source = "/srv/minilm"
"#;
    std::fs::write(&path, text).unwrap();
    let c = Config::load(&path).unwrap();
    assert_eq!(c.server.models_dir, folder.join("../models"));
    assert_eq!(
        c.server.registry.as_ref().unwrap().cache_dir,
        folder.join("cache")
    );
    let d: Vec<_> = c.deployments().collect();
    assert_eq!(
        d[1].source.as_deref(),
        Some(folder.join("pkgs/resnet50").as_path())
    );
    assert_eq!(
        d[2].source.as_deref(),
        Some(std::path::Path::new("/srv/minilm"))
    );
    assert_eq!(
        d[1].version_dir(&c.server.models_dir, "1"),
        folder.join("pkgs/resnet50/1")
    );
    // The default models_dir is the file's folder's models/.
    std::fs::write(
        &path,
        "[[deployment]]\nname = \"a\"\nmodel = \"identity\"\n",
    )
    .unwrap();
    assert_eq!(
        Config::load(&path).unwrap().server.models_dir,
        folder.join("models")
    );
    // Text parsed without a file keeps the paths as written.
    let parsed = Config::parse(text).unwrap();
    assert_eq!(
        parsed.server.models_dir,
        std::path::PathBuf::from("../models")
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// demo.toml and demo-registry.toml name the repository's models/ from
/// their own folder.
#[test]
fn the_demo_configs_find_the_repositorys_models() {
    let config_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config");
    let models = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../models")
        .canonicalize()
        .unwrap_or_else(|e| {
            panic!("models/ is missing ({e}): run scripts/setup.sh (make test does)")
        });
    for name in ["demo.toml", "demo-registry.toml"] {
        let c = Config::load(&config_dir.join(name)).unwrap();
        assert_eq!(
            c.server.models_dir.canonicalize().unwrap(),
            models,
            "{name}: models_dir"
        );
    }
}

/// Failure isolation is on unless a deployment turns it off, and the switch
/// reaches the batcher's configuration.
#[test]
fn failure_isolation_is_on_by_default_and_can_be_turned_off() {
    use example_multi_model::deploy::batch_config;
    let on = Config::parse(HEAD).unwrap();
    let d = on.deployments().next().unwrap();
    assert!(d.batching.failure_isolation);
    assert!(batch_config("a", &d.batching, &[])
        .unwrap()
        .failure_isolation());
    let off = Config::parse(&format!(
        "{HEAD}[deployment.batching]\nfailure_isolation = false\n"
    ))
    .unwrap();
    let d = off.deployments().next().unwrap();
    assert!(!d.batching.failure_isolation);
    assert!(!batch_config("a", &d.batching, &[])
        .unwrap()
        .failure_isolation());
}

/// `batching.profile` needs the adaptive cap, and a measured profile
/// reaches the batcher as where its cap starts.
#[test]
fn a_profile_needs_the_adaptive_cap_and_starts_it() {
    use example_multi_model::deploy::batch_config;
    use std::time::Duration;
    let e = error(&format!(
        "{HEAD}[deployment.batching]\nprofile = true\nadaptive = false\n"
    ));
    assert!(
        e.contains("batching.profile") && e.contains("adaptive"),
        "{e}"
    );
    let on = Config::parse(&format!(
        "{HEAD}[deployment.batching]\nmax_batch_size = 8\nprofile = true\n"
    ))
    .unwrap();
    let d = on.deployments().next().unwrap();
    assert!(d.batching.profile);
    let measured = [
        (1, Duration::from_millis(80)),
        (2, Duration::from_millis(130)),
        (4, Duration::from_millis(300)),
        (8, Duration::from_millis(680)),
    ];
    let b = batch_config("a", &d.batching, &measured).unwrap();
    assert_eq!(b.adaptive_profile(), &measured);
    // Without the adaptive cap a measured profile is not used.
    let mut fixed = d.batching.clone();
    (fixed.adaptive, fixed.profile) = (false, false);
    assert!(batch_config("a", &fixed, &measured)
        .unwrap()
        .adaptive_profile()
        .is_empty());
}

/// `batching.wait_for = "recent_load"` needs a `max_wait`, and reaches the
/// batcher.
#[test]
fn waiting_for_the_recent_load_needs_a_wait_and_reaches_the_batcher() {
    use convoy_batcher::WaitFor;
    use example_multi_model::deploy::batch_config;
    let e = error(&format!(
        "{HEAD}[deployment.batching]\nwait_for = \"recent_load\"\n"
    ));
    assert!(e.contains("wait_for") && e.contains("max_wait"), "{e}");
    let e = error(&format!(
        "{HEAD}[deployment.batching]\nwait_for = \"whenever\"\nmax_wait = \"2ms\"\n"
    ));
    assert!(e.contains("whenever") && e.contains("recent_load"), "{e}");
    let on = Config::parse(&format!(
        "{HEAD}[deployment.batching]\nwait_for = \"recent_load\"\nmax_wait = \"2ms\"\n"
    ))
    .unwrap();
    let d = on.deployments().next().unwrap();
    let b = batch_config("a", &d.batching, &[]).unwrap();
    assert_eq!(b.wait_for(), WaitFor::RecentLoad);
    assert_eq!(b.max_wait(), std::time::Duration::from_millis(2));
    let plain = Config::parse(HEAD).unwrap();
    let d = plain.deployments().next().unwrap();
    assert_eq!(
        batch_config("a", &d.batching, &[]).unwrap().wait_for(),
        WaitFor::Full
    );
}
