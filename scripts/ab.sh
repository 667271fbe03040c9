#!/usr/bin/env bash
# What one deployment setting costs a real model: one release server with
# two deployments of the same model, alike but for the TOML text A and B
# (put after `[deployment.batching]`'s keys: plain keys set batching,
# a `[deployment.<section>]` header starts its own section), the demo's
# bodies, AB_CLIENTS closed-loop clients (default 32) on each in turn for
# AB_SECS (default 8) per run, AB_ROUNDS rounds (default 3) alternating
# which goes first. Prints each run and the ratio of the medians. Nothing
# else should run on the machine meanwhile.
#
#   bash scripts/ab.sh MODEL 'A' 'B'
#   bash scripts/ab.sh minilm 'failure_isolation = true' 'failure_isolation = false'
#   bash scripts/ab.sh minilm $'[deployment.drift]\nwindow = "8s"' ''
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
if (($# != 3)); then
    sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
fi
MODEL=$1 A=$2 B=$3
CLIENTS=${AB_CLIENTS:-32}
SECS=${AB_SECS:-8}
ROUNDS=${AB_ROUNDS:-3}
case $MODEL in
minilm | resnet50 | yolov8n) ;;
*) echo "ab: MODEL is minilm, resnet50 or yolov8n, not $MODEL" >&2; exit 2 ;;
esac
# shellcheck source=lib/server.sh
source scripts/lib/server.sh
# shellcheck source=lib/bodies.sh
source scripts/lib/bodies.sh

bash scripts/setup.sh
release_server_bins
server_workdir
demo_bodies "$work"
route=$(model_route "$MODEL")
read -ra bodies <<<"$(model_bodies "$MODEL" "$work")"

deployment() { # NAME TEXT
    cat <<TOML
[[deployment]]
name = "$1"
model = "$MODEL"
[deployment.batching]
max_batch_size = 32
queue_capacity = 512
profile = true
queue_timeout = "20s"
$2

[deployment.device]
kind = "auto"
fraction = 0.15
intra_op_threads = 2

TOML
}
{
    cat <<TOML
[server]
addr = "127.0.0.1:0"
grpc_addr = "127.0.0.1:0"
models_dir = "$root/models"
request_timeout = "30s"
blocking_tasks = 2
host_memory = 8589934592

TOML
    deployment a "$A"
    deployment b "$B"
} >"$work/ab.toml"

start_server ab "$bin" "$work" --config "$work/ab.toml" || exit 1

run() { # DEPLOYMENT [SECS]
    "$bin/loadgen" run --url "$base/v1/models/$1/$route" "${bodies[@]}" \
        --concurrency "$CLIENTS" --duration-secs "${2:-$SECS}" --no-progress --json 2>/dev/null |
        jq -r --arg d "$1" '"\($d) \(.items_per_s) \(.p50_ms) \(.p99_ms) \(.errors)"'
}
echo "# $MODEL: a = ${A//$'\n'/ } | b = ${B//$'\n'/ }"
# Unmeasured warm-up of each.
run a 2 >/dev/null
run b 2 >/dev/null
echo "# $CLIENTS closed-loop clients, ${SECS}s per run: deployment items/s p50_ms p99_ms errors"
for r in $(seq 1 "$ROUNDS"); do
    if ((r % 2)); then order="a b"; else order="b a"; fi
    for d in $order; do run "$d" | tee -a "$work/runs.txt"; done
done
median() { awk -v d="$1" '$1 == d { print $2 }' "$work/runs.txt" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
a=$(median a)
b=$(median b)
echo "median items/s: a $a, b $b; a/b $(awk -v a="$a" -v b="$b" 'BEGIN { printf "%.3f", a / b }')"
