//! libFuzzer entry for `convoy_fuzz_harness::pool` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run pool_ops` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::pool::run(data));
