//! The multi-model server's TOML configuration
//! ([`crate::multi_model_config`], the server's own `config/` module compiled
//! into this crate, since the server crate links libtorch) parsed from
//! arbitrary text. Checked:
//! - no panic;
//! - every error names its line (`configuration error at line N: ...`,
//!   with N a line of the text) and a message, or is the one error without
//!   a place (no `[[deployment]]` at all);
//! - an accepted configuration holds every invariant the server relies on:
//!   at least one deployment, names unique and made of ASCII letters,
//!   digits, `-`, `_`, `.`; a model named; versions present, unique, with
//!   finite weights of 0 or more and one above 0 unless a rollout (exactly
//!   two versions, or the one a `models:/` source resolves to; ascending
//!   steps in (0, 100]) drives them; batching sizes,
//!   concurrency, queue, threads and compute weights at least 1; a device
//!   fraction in (0, 1]; `1 <= replicas.min <= replicas.max`; a positive,
//!   finite `target_ongoing`; a simulated delay only on the identity model;
//!   a positive body limit, blocking-task count and host memory.

use crate::multi_model_config::{Config, IDENTITY};

/// Runs one input. Panics when a promise breaks.
pub fn run(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        // A file that is not UTF-8 never reaches the parser.
        return;
    };
    match Config::parse(text) {
        Ok(config) => check_accepted(&config),
        Err(e) => check_error(text, &e.to_string()),
    }
}

fn check_error(text: &str, message: &str) {
    if message == "configuration error: no [[deployment]]" {
        return;
    }
    let rest = message
        .strip_prefix("configuration error at line ")
        .unwrap_or_else(|| panic!("an error without its line: {message:?}"));
    let (line, what) = rest
        .split_once(": ")
        .unwrap_or_else(|| panic!("an error without a message: {message:?}"));
    let line: usize = line
        .parse()
        .unwrap_or_else(|_| panic!("not a line number: {message:?}"));
    let lines = text.matches('\n').count() + 1;
    assert!(
        (1..=lines).contains(&line),
        "line {line} of a {lines}-line text: {message:?}"
    );
    assert!(!what.trim().is_empty(), "an empty message: {message:?}");
}

fn check_accepted(config: &Config) {
    let s = &config.server;
    assert!(s.body_limit > 0 && s.blocking_tasks > 0 && s.host_memory > 0);
    let deployments: Vec<_> = config.deployments().collect();
    assert!(!deployments.is_empty(), "accepted without a deployment");
    for (i, d) in deployments.iter().enumerate() {
        assert!(
            deployments[..i].iter().all(|e| e.name != d.name),
            "deployment {:?} twice",
            d.name
        );
        assert!(
            !d.name.is_empty()
                && d.name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c)),
            "deployment name {:?}",
            d.name
        );
        assert!(!d.model.is_empty());
        assert!(!d.versions.is_empty(), "{}: no version", d.name);
        for (j, v) in d.versions.iter().enumerate() {
            assert!(d.versions[..j].iter().all(|w| w.name != v.name));
            assert!(
                v.weight.is_finite() && v.weight >= 0.0,
                "weight {}",
                v.weight
            );
        }
        match &d.rollout {
            Some(plan) => {
                // A registry source rolls out each version it moves to; a
                // local one, from its first configured version to its second.
                let want = if d.registry.is_some() { 1 } else { 2 };
                assert_eq!(d.versions.len(), want, "{}: a rollout's versions", d.name);
                assert!(!plan.steps.is_empty());
                assert!(plan.steps.windows(2).all(|w| w[0] < w[1]));
                assert!(plan.steps.iter().all(|&p| p > 0.0 && p <= 100.0));
            }
            None => assert!(d.versions.iter().any(|v| v.weight > 0.0)),
        }
        let b = &d.batching;
        assert!(b.max_batch_size >= 1 && b.max_concurrent_batches >= 1 && b.queue_capacity >= 1);
        let dev = &d.device;
        assert!(
            dev.fraction > 0.0 && dev.fraction <= 1.0,
            "fraction {}",
            dev.fraction
        );
        assert!(dev.compute_weight >= 1 && dev.intra_op_threads >= 1);
        let r = &d.replicas;
        assert!(
            1 <= r.min && r.min <= r.max,
            "replicas {}..{}",
            r.min,
            r.max
        );
        assert!(r.target_ongoing.is_finite() && r.target_ongoing > 0.0);
        assert!(d.identity_delay.is_zero() || d.model == IDENTITY);
    }
}
