//! libFuzzer entry for `convoy_fuzz_harness::config` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run server_config` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::config::run(data));
