#!/usr/bin/env bash
# `make profile`: where the served path spends its CPU. Starts the release
# server on examples/multi-model/config/demo.toml, drives each model with
# PROFILE_CLIENTS closed-loop clients (the demo's bodies), records the
# server process with `perf record -g` for PROFILE_SECS, and writes per
# model:
#   PROFILE_OUT/flame-<model>.svg  the flame graph (inferno)
#   PROFILE_OUT/cpu-<model>.txt    the server's samples by thread group and
#                                  library, and loadgen's CPU per request
# Needs linux-perf and inferno: `bash scripts/test_setup.sh profile` (it
# runs first, and installs only what is missing).
#
#   PROFILE_MODELS   models (default "minilm resnet50 yolov8n")
#   PROFILE_CLIENTS  closed-loop clients (default 32)
#   PROFILE_SECS     recorded seconds per model (default 8)
#   PROFILE_OUT      output folder (default target/profile; the published
#                    graphs are benches/results/flame-*.svg)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/server.sh
source scripts/lib/server.sh
# shellcheck source=lib/bodies.sh
source scripts/lib/bodies.sh

CARGO=${CARGO:-cargo}
MODELS=${PROFILE_MODELS:-minilm resnet50 yolov8n}
CLIENTS=${PROFILE_CLIENTS:-32}
SECS=${PROFILE_SECS:-8}
OUT=${PROFILE_OUT:-target/profile}
mkdir -p "$OUT"

bash scripts/test_setup.sh profile
bash scripts/setup.sh
release_server_bins
server_workdir

demo_bodies "$work"

start_server profile "$bin" "$work" --config examples/multi-model/config/demo.toml \
    --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 || exit 1

for m in $MODELS; do
    case $m in
    minilm | resnet50 | yolov8n) ;;
    *) echo "profile: unknown model $m" >&2; exit 2 ;;
    esac
    route=$(model_route "$m")
    read -ra bodies <<<"$(model_bodies "$m" "$work")"
    echo "==> $m: $CLIENTS clients, perf record -g for ${SECS}s"
    # Load for the recording plus a second on each side.
    "$bin/loadgen" run --url "$base/v1/models/$m/$route" "${bodies[@]}" \
        --concurrency "$CLIENTS" --duration-secs $((SECS + 2)) --no-progress --json \
        >"$work/load-$m.json" 2>/dev/null &
    load=$!
    sleep 1
    perf record -q -F 499 -g -p "$server_pid" -o "$work/perf-$m.data" -- sleep "$SECS" 2>/dev/null
    wait "$load"
    perf script -i "$work/perf-$m.data" 2>/dev/null | inferno-collapse-perf >"$work/folded-$m.txt"
    inferno-flamegraph --title "convoy multi-model, $m, $CLIENTS clients" \
        <"$work/folded-$m.txt" >"$OUT/flame-$m.svg"
    {
        echo "# $m, $CLIENTS clients: $(jq -c '{ok, items_per_s, p50_ms, p99_ms}' "$work/load-$m.json")"
        echo "# server samples by thread group (convoy-compute-*: forward passes with"
        echo "# their OpenMP workers; tokio-rt-worker: HTTP, JSON, pre/post-processing, batching)"
        perf report -i "$work/perf-$m.data" --no-children --sort comm,dso --stdio -g none 2>/dev/null |
            grep -v '^#' | grep -v '^$' | head -15
    } >"$OUT/cpu-$m.txt"
    cat "$OUT/cpu-$m.txt" | sed 's/^/    /'
    echo "    flame graph: $OUT/flame-$m.svg"
done
