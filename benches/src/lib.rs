//! Criterion benchmarks for convoy; see `benches/`.

// The repository README's example, compiled and run as a doc test.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
struct ReadmeDoctests;
