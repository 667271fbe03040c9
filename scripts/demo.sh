#!/usr/bin/env bash
# `make demo`: build the batch-axum example and the load generator in release,
# start the server on a free loopback port, drive its batched and unbatched
# routes with closed-loop clients, and print what batching bought.
#
# Knobs (environment): DEMO_CONCURRENCY (default 1,16,64),
# DEMO_DURATION_SECS (4, per run), DEMO_WARMUP_SECS (1, per run),
# DEMO_MAX_BATCH_SIZE (32).
set -euo pipefail
cd "$(dirname "$0")/../examples"

CARGO=${CARGO:-cargo}
CONCURRENCY=${DEMO_CONCURRENCY:-1,16,64}
DURATION=${DEMO_DURATION_SECS:-4}
WARMUP=${DEMO_WARMUP_SECS:-1}
MAX_BATCH=${DEMO_MAX_BATCH_SIZE:-32}

echo "==> building the example server and the load generator (release)"
"$CARGO" build --release -p example-batch-axum -p example-loadgen

target_dir=${CARGO_TARGET_DIR:-$("$CARGO" metadata --format-version 1 --no-deps |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')}
bin="$target_dir/release"
[[ -x "$bin/example-batch-axum" && -x "$bin/loadgen" ]] || {
    echo "demo: binaries not found under $bin" >&2
    exit 1
}

work=$(mktemp -d)
server_pid=""
cleanup() {
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

echo "==> starting the server on a free loopback port"
"$bin/example-batch-axum" --addr 127.0.0.1:0 --max-batch-size "$MAX_BATCH" \
    >"$work/server.out" 2>"$work/server.err" &
server_pid=$!

base=""
for _ in $(seq 1 300); do
    base=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\)$/\1/p' "$work/server.out")
    [[ -n "$base" ]] && break
    if ! kill -0 "$server_pid" 2>/dev/null; then
        echo "demo: the server exited early:" >&2
        cat "$work/server.err" >&2
        exit 1
    fi
    sleep 0.1
done
[[ -n "$base" ]] || {
    echo "demo: the server did not report its address in 30 s" >&2
    exit 1
}
echo "    $base  (MLP 1024-2048-2048-16, f32, one model worker, max batch $MAX_BATCH)"

echo "==> load: ${DURATION}s per run after ${WARMUP}s warm-up, clients $CONCURRENCY, unbatched then batched"
"$bin/loadgen" demo --base "$base" --concurrency "$CONCURRENCY" \
    --duration-secs "$DURATION" --warmup-secs "$WARMUP"
