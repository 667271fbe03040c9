//! Bad configuration fails when the monitor is built, naming the field.

use std::path::PathBuf;
use std::time::Duration;

use convoy_drift::DriftConfig;

fn reference_file(test: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("convoy-drift-config-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("reference.json");
    std::fs::write(
        &path,
        r#"{"columns":[{"name":"x","kind":"numerical","values":[1,2,3]},
                       {"name":"c","kind":"categorical","values":["a","b"]}]}"#,
    )
    .unwrap();
    path
}

fn field_of(config: &DriftConfig) -> String {
    let e = config.validate().expect_err("config must be refused");
    assert!(
        e.to_string().starts_with(&format!("drift.{}:", e.field)),
        "{e}"
    );
    e.field
}

#[test]
fn the_defaults_are_evidentlys_and_valid() {
    let s = DriftConfig::new(reference_file("defaults"))
        .validate()
        .unwrap();
    assert_eq!((s.drift_share, s.sample_size), (0.5, 1000));
    assert_eq!(s.per_column, vec![(None, None), (None, None)]);
    assert!(s.webhook.is_none());
}

#[test]
fn each_bad_field_is_named() {
    let ok = DriftConfig::new(reference_file("fields"));
    let mut c = ok.clone();
    c.window = Duration::ZERO;
    assert_eq!(field_of(&c), "window");
    let mut c = ok.clone();
    c.sample_size = 0;
    assert_eq!(field_of(&c), "sample_size");
    c.sample_size = 20_000;
    assert_eq!(field_of(&c), "sample_size");
    let mut c = ok.clone();
    c.min_samples = 2000;
    assert_eq!(field_of(&c), "min_samples");
    let mut c = ok.clone();
    c.drift_share = 0.0;
    assert_eq!(field_of(&c), "drift_share");
    let mut c = ok.clone();
    c.stattest = Some("kolmogorov".into());
    assert_eq!(field_of(&c), "stattest");
    let mut c = ok.clone();
    c.num_stattest = Some("chisquare".into());
    assert_eq!(field_of(&c), "num_stattest");
    let mut c = ok.clone();
    c.cat_threshold = Some(f64::NAN);
    assert_eq!(field_of(&c), "cat_threshold");
    let mut c = ok.clone();
    c.reference = Some(PathBuf::from("/nonexistent/reference.json"));
    assert_eq!(field_of(&c), "reference");
    c.reference = None;
    assert_eq!(field_of(&c), "reference");
    let mut c = ok.clone();
    c.webhook = Some("ftp://example".into());
    assert_eq!(field_of(&c), "webhook");
    let mut c = ok.clone();
    c.webhook = Some("http://127.0.0.1:9/hook".into());
    c.webhook_attempts = 0;
    assert_eq!(field_of(&c), "webhook_attempts");
}

#[test]
fn per_column_overrides_are_checked_against_the_reference() {
    let ok = DriftConfig::new(reference_file("columns"));
    let c: DriftConfig = serde_json::from_value(serde_json::json!({
        "reference": ok.reference,
        "window": "30s",
        "columns": {"x": {"stattest": "wasserstein", "threshold": 0.2}, "c": {"stattest": "jensenshannon"}}
    }))
    .unwrap();
    assert_eq!(c.window, Duration::from_secs(30));
    let s = c.validate().unwrap();
    assert_eq!(s.per_column[0].1, Some(0.2));
    let mut bad = c.clone();
    bad.columns.insert("nope".into(), Default::default());
    assert_eq!(field_of(&bad), "columns.nope");
    let mut bad = c.clone();
    bad.columns.get_mut("c").unwrap().stattest = Some("ks".into());
    assert_eq!(field_of(&bad), "columns.c.stattest");
    let mut bad = c;
    bad.columns.get_mut("x").unwrap().stattest = Some("t-test".into());
    assert_eq!(field_of(&bad), "columns.x.stattest");
}

#[test]
fn unknown_fields_and_bad_durations_are_refused_when_parsed() {
    let e = serde_json::from_value::<DriftConfig>(
        serde_json::json!({"reference": "r.json", "windw": "1s"}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("windw"), "{e}");
    let e = serde_json::from_value::<DriftConfig>(
        serde_json::json!({"reference": "r.json", "window": "soon"}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("soon"), "{e}");
}

#[test]
fn a_bad_reference_file_is_named() {
    let dir = reference_file("bad_reference")
        .parent()
        .unwrap()
        .to_path_buf();
    for (name, body) in [
        ("empty.json", r#"{"columns":[]}"#),
        (
            "dup.json",
            r#"{"columns":[{"name":"x","kind":"numerical","values":[1]},{"name":"x","kind":"numerical","values":[2]}]}"#,
        ),
        (
            "kind.json",
            r#"{"columns":[{"name":"x","kind":"categorical","values":[1,2]}]}"#,
        ),
        ("garbage.json", "not json"),
    ] {
        let path = dir.join(name);
        std::fs::write(&path, body).unwrap();
        let e = DriftConfig::new(&path).validate().unwrap_err();
        assert_eq!(e.field, "reference", "{name}: {e}");
        assert!(e.message.contains(name), "{name}: {e}");
    }
}
