//! libFuzzer entry for `convoy_fuzz_harness::image` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run image_decode` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::image::run(data));
