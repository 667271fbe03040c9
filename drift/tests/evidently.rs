//! convoy-drift against Evidently itself: on the data sets of
//! `tests/fixtures/evidently.json` (written by
//! `scripts/python/drift_evidently.py` with Evidently 0.7.23's
//! `Report([DataDriftTable()])`), every column's test, verdict and score and
//! the dataset verdict agree, the scores to 1e-6 relative.

use std::path::{Path, PathBuf};

use convoy_drift::stats::{ks_2samp, ColumnValues};
use convoy_drift::{compare, CompareOptions, Reference};
use serde::Deserialize;
use serde_json::Value;

#[derive(Deserialize)]
struct Fixture {
    evidently: String,
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    name: String,
    reference: Reference,
    current: serde_json::Map<String, Value>,
    expected: Expected,
}

#[derive(Deserialize)]
struct Expected {
    columns: serde_json::Map<String, Value>,
    drifted_columns: usize,
    share: f64,
    dataset_drift: bool,
}

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Relative difference, with 0 against 0 agreeing.
fn rel(a: f64, b: f64) -> f64 {
    if a == b {
        0.0
    } else {
        (a - b).abs() / a.abs().max(b.abs())
    }
}

/// Checks every case of a fixture file; returns the table of worst
/// relative differences per test for the note.
fn check(path: &Path) -> Vec<String> {
    let fixture: Fixture = serde_json::from_slice(&std::fs::read(path).expect("fixture readable"))
        .expect("fixture parses");
    assert!(
        fixture.evidently.starts_with("0.7"),
        "{}",
        fixture.evidently
    );
    assert!(fixture.cases.len() >= 15, "{} cases", fixture.cases.len());
    let mut lines = Vec::new();
    let mut worst: std::collections::BTreeMap<&'static str, f64> = Default::default();
    for case in &fixture.cases {
        let reference = case.reference.clone().checked().expect("reference valid");
        let current: Vec<ColumnValues> = reference
            .columns
            .iter()
            .map(|c| {
                serde_json::from_value(case.current[&c.name].clone())
                    .expect("current column parses")
            })
            .collect();
        let got = compare(
            &reference,
            &current,
            &CompareOptions::evidently_defaults(reference.columns.len()),
        );
        for (col, cur) in got.columns.iter().zip(&current) {
            let want = &case.expected.columns[&col.column];
            let ctx = format!("{} / {}", case.name, col.column);
            assert_eq!(
                col.stattest_name,
                want["stattest"].as_str().unwrap(),
                "{ctx}: test"
            );
            let score = col.score.expect("test ran");
            let want_score = want["score"].as_f64().unwrap();
            let d = rel(score, want_score);
            assert!(
                d <= 1e-6,
                "{ctx}: score {score} against Evidently's {want_score} (rel {d:e})"
            );
            assert_eq!(
                col.threshold,
                want["threshold"].as_f64().unwrap(),
                "{ctx}: threshold"
            );
            assert_eq!(
                col.drifted,
                want["drifted"].as_bool().unwrap(),
                "{ctx}: verdict"
            );
            let w = worst.entry(col.stattest.name()).or_default();
            *w = w.max(d);
            if let (Some(ks_d), ColumnValues::Numerical(r), ColumnValues::Numerical(c)) = (
                want.get("ks_statistic").and_then(Value::as_f64),
                &reference
                    .columns
                    .iter()
                    .find(|rc| rc.name == col.column)
                    .unwrap()
                    .values,
                cur,
            ) {
                let ours = ks_2samp(r, c).statistic;
                assert!(
                    rel(ours, ks_d) <= 1e-12,
                    "{ctx}: D {ours} against scipy's {ks_d}"
                );
            }
        }
        assert_eq!(
            got.drifted_columns, case.expected.drifted_columns,
            "{}: drifted columns",
            case.name
        );
        assert!(
            rel(got.share, case.expected.share) <= 1e-12,
            "{}: share",
            case.name
        );
        assert_eq!(
            got.dataset_drift, case.expected.dataset_drift,
            "{}: dataset verdict",
            case.name
        );
        lines.push(format!(
            "{:<26} dataset drift {:<5} share {:.3} (Evidently: {} / {:.3})",
            case.name,
            got.dataset_drift,
            got.share,
            case.expected.dataset_drift,
            case.expected.share
        ));
    }
    for (test, d) in worst {
        lines.push(format!("worst relative difference, {test}: {d:.2e}"));
    }
    lines
}

#[test]
fn verdicts_and_scores_agree_with_evidently() {
    for line in check(&crate_dir().join("tests/fixtures/evidently.json")) {
        println!("{line}");
    }
}

/// Reruns Evidently on the same generated data (`make test` installs the
/// venv first) and checks again, so the fixture cannot drift from what
/// the pinned Evidently says.
#[test]
fn evidently_fixture_regenerates() {
    let root = crate_dir().join("..");
    let python = root.join(".venv/bin/python3");
    if !python.is_file() {
        println!("skipped: no .venv (scripts/setup.sh installs Evidently)");
        return;
    }
    let out_dir =
        std::env::temp_dir().join(format!("convoy-drift-evidently-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).unwrap();
    let out = out_dir.join("evidently.json");
    let status = std::process::Command::new(&python)
        .arg(root.join("scripts/python/drift_evidently.py"))
        .arg(&out)
        .status()
        .expect("python runs");
    assert!(status.success(), "drift_evidently.py failed");
    check(&out);
    let fresh: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    let committed: Value = serde_json::from_slice(
        &std::fs::read(crate_dir().join("tests/fixtures/evidently.json")).unwrap(),
    )
    .unwrap();
    // The same data, the same verdicts, the same scores (to summation order:
    // Evidently iterates a Python set of labels, whose order varies by run).
    let (fresh, committed) = (
        fresh["cases"].as_array().unwrap(),
        committed["cases"].as_array().unwrap(),
    );
    assert_eq!(
        fresh.len(),
        committed.len(),
        "case count: regenerate the fixture"
    );
    for (f, c) in fresh.iter().zip(committed) {
        let name = c["name"].as_str().unwrap();
        assert!(
            f["reference"] == c["reference"] && f["current"] == c["current"],
            "{name}: data differs: regenerate the fixture"
        );
        let (fe, ce) = (&f["expected"], &c["expected"]);
        assert_eq!(fe["dataset_drift"], ce["dataset_drift"], "{name}");
        for (col, want) in ce["columns"].as_object().unwrap() {
            let got = &fe["columns"][col];
            assert_eq!(got["stattest"], want["stattest"], "{name} / {col}");
            assert_eq!(got["drifted"], want["drifted"], "{name} / {col}");
            let d = rel(
                got["score"].as_f64().unwrap(),
                want["score"].as_f64().unwrap(),
            );
            assert!(
                d <= 1e-9,
                "{name} / {col}: score moved by {d:e}: regenerate the fixture"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&out_dir);
}
