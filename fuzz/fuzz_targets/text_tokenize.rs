//! libFuzzer entry for `convoy_fuzz_harness::text` (the checks are documented
//! there). Run with `make fuzz`, or `cargo +nightly fuzz run text_tokenize` from `fuzz/`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| convoy_fuzz_harness::text::run(data));
