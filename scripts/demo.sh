#!/usr/bin/env bash
# `make demo`: under construction.
set -euo pipefail
cd "$(dirname "$0")/.."
cd examples && cargo run --release -p example-batch-axum
