//! Replays every checked-in seed of every fuzz target (`fuzz/seeds/<target>/`)
//! and a fixed set of pseudo-random inputs through the targets' checks, on
//! stable Rust: a crash the fuzzer once found stays fixed, and the checks
//! run in `make test` even where no fuzzer can.

use std::path::PathBuf;

use convoy_fuzz_harness::TARGETS;
use rand::{Rng, SeedableRng};

fn seeds_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../seeds")
        .join(target)
}

#[test]
fn every_target_has_seeds_and_they_pass() {
    for &(name, check) in TARGETS {
        let dir = seeds_dir(name);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("dir entry").path())
            .filter(|p| p.is_file())
            .collect();
        files.sort();
        assert!(
            !files.is_empty(),
            "no seeds for {name} in {}",
            dir.display()
        );
        for file in files {
            let data = std::fs::read(&file).expect("readable seed");
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(outcome.is_ok(), "{name}: seed {} fails", file.display());
        }
    }
}

#[test]
fn random_inputs_pass() {
    let cases: usize = std::env::var("CONVOY_FUZZ_REPLAY_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300);
    for &(name, check) in TARGETS {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0xC0_4A7);
        for case in 0..cases {
            let len = rng.random_range(0..2048);
            let data: Vec<u8> = (0..len).map(|_| rng.random()).collect();
            let outcome = std::panic::catch_unwind(|| check(&data));
            assert!(
                outcome.is_ok(),
                "{name}: random case {case} fails (input: {data:?})"
            );
        }
    }
}
