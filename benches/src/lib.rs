//! Criterion benchmarks for convoy; see `benches/`.
