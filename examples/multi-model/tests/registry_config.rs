//! The registry part of the configuration: `models:/` sources,
//! `[server.registry]`, rollout analysis and drift thresholds; bad values
//! fail at load, naming the field and its line.

use std::time::Duration;

use example_multi_model::config::P99Limit;
use example_multi_model::Config;
use example_registry::{ModelSource, Selector};

fn error(text: &str) -> String {
    Config::parse(text).unwrap_err().to_string()
}

const REGISTRY: &str = "[server.registry]\nuri = \"http://127.0.0.1:5000\"\n";

#[test]
fn the_registry_example_loads() {
    let c = Config::parse(include_str!("../config/registry.toml")).unwrap();
    let r = c.server.registry.as_ref().unwrap();
    assert_eq!(r.uri, "http://127.0.0.1:5000");
    assert_eq!(r.poll_interval, Duration::from_secs(2));
    let d = c.deployments().next().unwrap();
    assert_eq!(d.model, "resnet50");
    assert_eq!(
        d.registry,
        Some(ModelSource::Mlflow {
            name: "resnet50".into(),
            selector: Selector::Alias("champion".into())
        })
    );
    let plan = d.rollout.as_ref().unwrap();
    assert_eq!(plan.steps, [10.0, 50.0, 100.0]);
    assert_eq!(plan.step, Duration::from_secs(20));
    assert_eq!(plan.latency, P99Limit::StableFactor(2.0));
    assert_eq!(plan.failure_limit, 2);
    let drift = plan.drift.as_ref().unwrap();
    assert_eq!(drift.min_top1_agreement, Some(0.9));
    assert_eq!(drift.min_pairs, 50);
    let minilm = c.deployments().nth(1).unwrap();
    let plan = minilm.rollout.as_ref().unwrap();
    // Defaults: analysis every step / 5, rollback steps step / 2 apart.
    assert_eq!(plan.analysis_interval, Duration::from_secs(4));
    assert_eq!(plan.rollback_interval, Duration::from_secs(10));
    assert_eq!(plan.drift.as_ref().unwrap().min_cosine, Some(0.98));
}

#[test]
fn registry_mistakes_name_the_field_and_line() {
    // A models:/ source without [server.registry].
    let e = error("[[deployment]]\nname = \"a\"\nsource = \"models:/a@live\"\n");
    assert!(
        e.contains("[server.registry]") && e.contains("line 1"),
        "{e}"
    );
    // A malformed URI.
    let e = error(&format!(
        "{REGISTRY}[[deployment]]\nname = \"a\"\nsource = \"models:/a/latest\"\n"
    ));
    assert!(e.contains("source") && e.contains("latest"), "{e}");
    // Versions are the registry's.
    let e = error(&format!(
        "{REGISTRY}[[deployment]]\nname = \"a\"\nsource = \"models:/a@live\"\n[[deployment.version]]\nname = \"1\"\n"
    ));
    assert!(e.contains("version"), "{e}");
    // A tracking URI that is not http://host:port.
    let e = error("[server.registry]\nuri = \"ftp://x\"\n[[deployment]]\nname = \"a\"\nmodel = \"identity\"\n");
    assert!(e.contains("line 2") && e.contains("http://"), "{e}");
    let e = error("[server.registry]\nuri = \"http://x:1\"\npoll_interval = \"0\"\n[[deployment]]\nname = \"a\"\nmodel = \"identity\"\n");
    assert!(e.contains("line 3") && e.contains("above 0"), "{e}");
}

#[test]
fn rollout_and_drift_mistakes_name_the_field_and_line() {
    let head = format!("{REGISTRY}[[deployment]]\nname = \"a\"\nsource = \"models:/a@live\"\n[deployment.rollout]\nsteps = [10, 100]\n");
    // Lines: 1-2 registry, 3-5 deployment, 6 [rollout], 7 steps, 8 the field.
    for (field, why) in [
        ("max_error_rate = 1.5", "[0, 1]"),
        ("min_samples = 0", "at least 1"),
        ("step = \"0\"", "above 0"),
        ("max_p99 = \"fast\"", "not a number"),
        ("failure_limit = 0", "1 to"),
        ("no_such_field = 1", "no_such_field"),
    ] {
        let e = error(&format!("{head}{field}\n"));
        assert!(e.contains("line 8") && e.contains(why), "{field}: {e}");
    }
    let e = error(&format!("{head}max_p99 = \"1s\"\nmax_p99_factor = 2.0\n"));
    assert!(e.contains("not both"), "{e}");
    let drift = format!("{head}[deployment.rollout.drift]\n");
    for (field, why) in [
        ("min_top1_agreement = 1.2", "[0, 1]"),
        ("min_cosine = -2", "[-1, 1]"),
        ("max_psi = -0.1", "[0, "),
        ("mirror_fraction = 0", "(0, 1]"),
        ("min_pairs = 0", "at least 1"),
    ] {
        let e = error(&format!("{drift}{field}\n"));
        assert!(e.contains("line 9") && e.contains(why), "{field}: {e}");
    }
    let e = error(&format!("{drift}min_pairs = 10\n"));
    assert!(e.contains("at least one of min_top1_agreement"), "{e}");
    // step_duration is another name for step.
    let c = Config::parse(&format!("{head}step_duration = \"250ms\"\n")).unwrap();
    let plan = c.deployments().next().unwrap().rollout.clone().unwrap();
    assert_eq!(plan.step, Duration::from_millis(250));
    assert_eq!(plan.analysis_interval, Duration::from_millis(50));
}
