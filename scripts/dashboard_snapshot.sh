#!/usr/bin/env bash
# A picture of the Grafana dashboard with real data, without Grafana:
#
#  1. builds the multi-model server and the load generator (release);
#  2. starts the server on a free loopback port with a configuration written
#     here: `identity` in two versions under a canary rollout (10 -> 30 ->
#     60 -> 100 %, one step every SNAPSHOT_STEP), `slow` (one 200 ms slot,
#     a four-request queue: refusals under bursts) and, when
#     models/minilm/1 exists (scripts/setup.sh), the real MiniLM model;
#  3. starts Prometheus on it (scripts/prometheus.sh, scraping every 1 s,
#     the rules of observability/rules loaded);
#  4. drives load for SNAPSHOT_LOAD_SECS (default 80) at rates that change
#     every fifth of it: open-loop identity traffic, open-loop MiniLM
#     sentences, and bursts at `slow` in the middle fifth;
#  5. renders every panel of observability/grafana/dashboard.json over the
#     run (scripts/render_dashboard.py) to SNAPSHOT_OUT (default
#     docs/images/grafana-dashboard.png);
#  6. stops what it started (by PID) and removes its temporary files, also
#     on error or Ctrl-C.
#
# Knobs (environment):
#   SNAPSHOT_OUT           the PNG (default docs/images/grafana-dashboard.png)
#   SNAPSHOT_PANEL_DIR     also one PNG per panel here
#   SNAPSHOT_LOAD_SECS     seconds of load (default 80)
#   SNAPSHOT_STEP          time at each rollout step (default a quarter of the load)
#   SNAPSHOT_IDENTITY_RATES  identity requests/s in each fifth (default 40,150,300,150,60)
#   SNAPSHOT_MINILM_RATES  MiniLM requests/s in each fifth (default 5,10,25,40,15)
#   SNAPSHOT_SLOW_RATES    `slow` requests/s in each fifth (default 2,3,12,3,2;
#                          its capacity is 5/s)
#   SNAPSHOT_SKIP_BUILD=1  use the binaries already built
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/server.sh
source scripts/lib/server.sh

CARGO=${CARGO:-cargo}
OUT=${SNAPSHOT_OUT:-docs/images/grafana-dashboard.png}
LOAD_SECS=${SNAPSHOT_LOAD_SECS:-80}
IDENTITY_RATES=${SNAPSHOT_IDENTITY_RATES:-40,150,300,150,60}
MINILM_RATES=${SNAPSHOT_MINILM_RATES:-5,10,25,40,15}
SLOW_RATES=${SNAPSHOT_SLOW_RATES:-2,3,12,3,2}
[[ $LOAD_SECS =~ ^[0-9]+$ && $LOAD_SECS -ge 10 ]] || {
    echo "dashboard_snapshot: SNAPSHOT_LOAD_SECS must be a whole number >= 10" >&2
    exit 2
}
PHASE=$((LOAD_SECS / 5))
STEP=${SNAPSHOT_STEP:-$((LOAD_SECS / 4))s}
python=.venv/bin/python3
[[ -x $python ]] || python=python3

if [[ ${SNAPSHOT_SKIP_BUILD:-0} != 1 ]]; then
    echo "==> building the server and the load generator (release)"
    (cd examples && "$CARGO" build --release -p example-multi-model -p example-loadgen)
fi
target_dir=${CARGO_TARGET_DIR:-$(cd examples && "$CARGO" metadata --format-version 1 --no-deps | jq -r .target_directory)}
bin="$target_dir/release"
for b in multi-model loadgen; do
    [[ -x "$bin/$b" ]] || {
        echo "dashboard_snapshot: $bin/$b not found (build it, or drop SNAPSHOT_SKIP_BUILD)" >&2
        exit 1
    }
done

work=$(mktemp -d "${TMPDIR:-/tmp}/convoy-snapshot.XXXXXX")
server_pid=""
prom_dir=""
load_pids=()
cleanup() {
    local pid
    for pid in "${load_pids[@]}"; do
        # The subshell first, so that it starts no further load generator,
        # then the one it runs.
        local kids
        kids=$(pgrep -P "$pid" || true)
        kill -TERM "$pid" 2>/dev/null || true
        [[ -z $kids ]] || kill -TERM $kids 2>/dev/null || true
    done
    for pid in "${load_pids[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    if [[ -n $prom_dir ]]; then
        bash scripts/prometheus.sh stop "$prom_dir" || true
    fi
    if [[ -n $server_pid ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# The server's configuration: free ports, the repository's models.
cat >"$work/server.toml" <<EOF
[server]
addr = "127.0.0.1:0"
models_dir = "$root/models"
body_limit = 1048576
request_timeout = "10s"
blocking_tasks = 2
host_memory = 2147483648  # 2 GiB: MiniLM's quota is its fraction (0.2) of it, weights (90 MB) and activations

# Two versions; the rollout moves traffic from 1 to 2 step by step.
[[deployment]]
name = "identity"
model = "identity"
identity_delay = "5ms"

[[deployment.version]]
name = "1"

[[deployment.version]]
name = "2"

[deployment.rollout]
steps = [10, 30, 60, 100]
step = "$STEP"
min_samples = 20
max_error_rate = 0.05
max_p99 = "1s"
failure_limit = 3

[deployment.batching]
max_batch_size = 32
max_wait = "2ms"
queue_capacity = 512
queue_timeout = "5s"

[deployment.device]
kind = "cpu"

[deployment.replicas]
min = 1
max = 3
policy = "target_ongoing"
target_ongoing = 2

# One 200 ms slot and a four-request queue: bursts are refused (503).
[[deployment]]
name = "slow"
model = "identity"
identity_delay = "200ms"

[deployment.batching]
max_batch_size = 1
queue_capacity = 4
queue_timeout = "5s"

[deployment.device]
kind = "cpu"
EOF
minilm=0
if [[ -f models/minilm/1/model.json ]]; then
    minilm=1
    cat >>"$work/server.toml" <<'EOF'

[[deployment]]
name = "minilm"
model = "minilm"

[deployment.batching]
max_batch_size = 16
queue_capacity = 256
queue_timeout = "10s"

[deployment.device]
kind = "auto"
fraction = 0.2
intra_op_threads = 1

[deployment.replicas]
min = 1
max = 2
policy = "latency_slo"
slo = "100ms"
EOF
else
    echo "dashboard_snapshot: models/minilm/1 is missing (scripts/setup.sh exports it); identity models only" >&2
fi

echo "==> starting the server"
start_server dashboard_snapshot "$bin" "$work" --config "$work/server.toml" --addr 127.0.0.1:0 || exit 1
echo "    $base"

echo "==> starting Prometheus (scrapes every 1 s)"
bash scripts/prometheus.sh start "${base#http://}" 1s >"$work/prometheus.env"
prom_url=$(sed -n 's/^PROMETHEUS_URL=//p' "$work/prometheus.env")
prom_dir=$(sed -n 's/^PROMETHEUS_DIR=//p' "$work/prometheus.env")
echo "    $prom_url"
for _ in $(seq 1 200); do
    curl -fsS "$prom_url/api/v1/targets" | jq -e '.data.activeTargets[0].health == "up"' >/dev/null 2>&1 && break
    sleep 0.1
done

# Request bodies.
echo '{"inputs":[{"name":"INPUT0","datatype":"FP32","shape":[1,4],"data":[1,2,3,4]}]}' >"$work/row.json"
cat >"$work/texts.txt" <<'EOF'
convoy batches requests so the accelerator sees fewer, larger forward passes.
A quick brown fox jumps over the lazy dog near the river bank.
Sentence embeddings map similar meanings to nearby vectors.
Batching trades a little latency for a lot of throughput under load.
EOF

# One open loop per fifth of the run at each of RATES (comma-separated).
phases() {
    local route=$1 rates=$2 name=$3
    shift 3
    local rate i=0
    for rate in ${rates//,/ }; do
        "$bin/loadgen" run --url "$base$route" "$@" --rate "$rate" --seed $((i + 1)) \
            --duration-secs "$PHASE" --max-outstanding 256 --timeout-secs 10 --no-progress --json \
            >>"$work/load-$name.jsonl" 2>>"$work/load.err" || true
        i=$((i + 1))
    done
}

echo "==> load for $((PHASE * 5)) s (requests/s per fifth: identity $IDENTITY_RATES; slow $SLOW_RATES$([[ $minilm == 1 ]] && echo "; minilm $MINILM_RATES"))"
from=$(date +%s)
phases /v1/models/identity/infer "$IDENTITY_RATES" identity --body-file "$work/row.json" &
load_pids+=($!)
phases /v1/models/slow/infer "$SLOW_RATES" slow --body-file "$work/row.json" &
load_pids+=($!)
if [[ $minilm == 1 ]]; then
    phases /v1/models/minilm/embed "$MINILM_RATES" minilm --text-lines "$work/texts.txt" &
    load_pids+=($!)
fi
for pid in "${load_pids[@]}"; do
    wait "$pid"
done
load_pids=()
for f in "$work"/load-*.jsonl; do
    name=$(basename "$f" .jsonl)
    jq -rs --arg n "${name#load-}" '"    \($n): " + (map("\(.offered_per_s)/s \(.ok) ok \(.errors) err p99 \(.p99_ms | round) ms") | join(" | "))' "$f"
done
# The last scrapes and rule evaluations.
sleep 3
to=$(date +%s)

echo "==> rendering the dashboard"
args=(--prometheus "$prom_url" --start "$((from - 5))" --end "$to" --scrape-interval 1s --out "$OUT")
[[ -n ${SNAPSHOT_PANEL_DIR:-} ]] && args+=(--panel-dir "$SNAPSHOT_PANEL_DIR")
"$python" scripts/render_dashboard.py "${args[@]}" | sed 's/^/    /'
echo "rollout: $(curl -fsS "$base/v1/models" | jq -c '.models[] | select(.name == "identity") | {rollout: .rollout.state, versions: [.versions[] | {name, weight}]}')"
