//! libFuzzer entry for `convoy_fuzz_harness::autoscale` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run autoscale_signals` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::autoscale::run(data));
