//! Run with `cargo run -p example-batch-axum` (under construction).

fn main() {}
