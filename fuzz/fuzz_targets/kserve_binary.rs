//! libFuzzer entry for `convoy_fuzz_harness::kserve` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run kserve_binary` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::kserve::run_binary(data));
