//! The checks behind convoy's fuzz targets, as plain functions of the input
//! bytes. libFuzzer drives them on nightly (`make fuzz`, targets in
//! `fuzz/fuzz_targets/`), and `cargo test` in this crate replays every
//! checked-in seed (`fuzz/seeds/<target>/`) plus a fixed set of
//! pseudo-random inputs through them on stable Rust, so a crash once found
//! stays fixed. Each function panics when one of convoy's promises breaks.

pub mod allocator;
pub mod autoscale;
pub mod batcher;
pub mod config;
pub mod image;
pub mod kserve;
pub mod pool;
pub mod router;
pub mod text;

/// The multi-model server's configuration types and parser: its
/// `config/` module compiled into this crate as it is (the server crate
/// itself links libtorch, which the harness must not need). It uses serde,
/// toml, convoy-drift and the registry client's types, and names the
/// server's running drift monitor ([`drift::DriftMonitor`]).
#[path = "../../../examples/multi-model/src/config/mod.rs"]
pub mod multi_model_config;

/// What `config/` names of the server's `drift` module: the type of the
/// monitor a `[deployment.drift]` section holds once the server starts it.
/// Parsing never starts one, so here it has no content.
pub mod drift {
    /// The server's running drift monitor (never started by the harness).
    #[derive(Debug, Clone)]
    pub struct DriftMonitor;
}

/// A target's check: panics when the input breaks one of convoy's promises.
pub type Check = fn(&[u8]);

/// Every target: its name (as in `fuzz/fuzz_targets/` and `fuzz/seeds/`)
/// and its check.
pub const TARGETS: &[(&str, Check)] = &[
    ("allocator_ops", allocator::run),
    ("batcher_ops", batcher::run),
    ("router_ops", router::run),
    ("autoscale_signals", autoscale::run),
    ("pool_ops", pool::run),
    ("kserve_json", kserve::run_json),
    ("kserve_binary", kserve::run_binary),
    ("image_decode", image::run),
    ("text_tokenize", text::run),
    ("server_config", config::run),
];

/// Keeps a target's own scripted panics (a model that panics on purpose)
/// out of the output; every other panic still prints.
pub fn quiet_scripted_panics(message: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(move || {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let scripted = payload
                .downcast_ref::<String>()
                .is_some_and(|m| m == message)
                || payload
                    .downcast_ref::<&str>()
                    .is_some_and(|m| *m == message);
            if !scripted {
                default(info);
            }
        }));
    });
}
