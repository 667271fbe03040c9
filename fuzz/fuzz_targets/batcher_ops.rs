//! libFuzzer entry for `convoy_fuzz_harness::batcher` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run batcher_ops` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::batcher::run(data));
