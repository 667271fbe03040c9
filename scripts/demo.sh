#!/usr/bin/env bash
# `make demo`: the multi-model server on real models (ResNet-50, MiniLM,
# YOLOv8n), and what batching bought.
#
#  1. scripts/setup.sh (venv + model export; seconds when already done);
#  2. builds the server, the model runtime's raw-bench and the load
#     generator in release;
#  3. raw offline throughput of each model at each batch size (raw-bench:
#     forward passes in a loop, no server), BEFORE the server starts so the
#     two do not compete for the cores;
#  4. starts `multi-model --config examples/multi-model/config/demo.toml` on
#     free loopback ports, waits for its `listening on` line and /readyz;
#  5. per model: closed-loop load on the batched deployment and on its
#     `<name>-unbatched` twin (max_batch_size 1) at 1 and N clients:
#     throughput, p50/p99, mean batch size (from GET /v1/models); served
#     throughput at N clients over the best raw throughput;
#  6. an open-loop rate sweep of one model, plotted to DEMO_PLOT;
#  7. the summary table;
#  8. drift (scripts/demo_drift.sh): in-distribution then shifted inputs to
#     ResNet-50 and MiniLM, each closed window's verdict from
#     /v1/models/<m>/drift as it turns; then exits, or keeps serving with
#     --serve (`make demo DEMO_ARGS=--serve`).
#
# Knobs (environment), sized so the report comes within ~10 minutes on a
# 2-core machine once setup is done:
#   DEMO_MODELS            models to run (default "resnet50 minilm yolov8n")
#   DEMO_CLIENTS           the N of "1 and N clients" (default 32)
#   DEMO_DURATION_SECS     measured seconds per load run (default 5)
#   DEMO_WARMUP_SECS       unmeasured seconds before each load run (default 1)
#   DEMO_RAW_SECS          raw-bench seconds per batch size and round (default 1)
#   DEMO_RAW_ROUNDS        raw-bench rounds over the batch sizes; each size's
#                          figure is its median over them (default 3)
#   DEMO_RAW_BATCH_SIZES   raw-bench batch sizes (default 1,2,4,8,16,32)
#   DEMO_THREADS           raw-bench intra-op threads (default 2)
#   DEMO_SWEEP_MODEL       model of the rate sweep (default minilm; "none" skips)
#   DEMO_SWEEP_FRACTIONS   sweep rates as fractions of its served saturation
#                          throughput (default 0.25,0.5,0.75,1,1.25)
#   DEMO_SWEEP_SECS        seconds per sweep rate (default 4)
#   DEMO_PLOT              the sweep plot (default target/demo/demo-sweep.svg: run
#                          outputs stay out of the tracked tree; the published
#                          picture is benches/results/demo-sweep.svg)
#   DEMO_TEXT_KEY          MiniLM bodies as {"<key>": [text]} instead of [text]
#   DEMO_SKIP_SETUP=1      do not run scripts/setup.sh
#   DEMO_ARGS              extra arguments (as `make demo DEMO_ARGS=--serve`)
#
# `make demo REGISTRY=mlflow` (--registry=mlflow): the models come from an
# MLflow Model Registry and one promotion is rolled out live instead:
#
#  R1. starts MLflow (scripts/registry.sh, a fresh store in a temporary
#      folder, a free port), registers MiniLM exports 1 and 2 and ResNet-50
#      export 1, points minilm@champion at version 1 and moves resnet50
#      version 1 to Production;
#  R2. starts the server with examples/multi-model/config/demo-registry.toml
#      (deployments `models:/minilm@champion`, `models:/resnet50/Production`);
#  R3. drives MiniLM with DEMO_CLIENTS closed-loop clients, promotes minilm
#      version 2 to @champion after DEMO_REGISTRY_PROMOTE_AFTER_SECS, and
#      prints the rollout as it happens (versions, weights, the server's
#      rollout log lines with their reasons) until it completes or rolls
#      back (at most DEMO_REGISTRY_TIMEOUT_SECS);
#  R4. the result: requests during the switch, failures, load per window.
#
#   DEMO_REGISTRY_CONFIG             the server config (default
#                                    examples/multi-model/config/demo-registry.toml;
#                                    its `uri` and `cache_dir` lines are rewritten)
#   DEMO_REGISTRY_CLIENTS            MiniLM clients (default 8)
#   DEMO_REGISTRY_WINDOW_SECS        seconds per load window (default 5)
#   DEMO_REGISTRY_PROMOTE_AFTER_SECS load before the promotion (default 10)
#   DEMO_REGISTRY_TIMEOUT_SECS       most seconds the rollout may take (default 240)
#   DEMO_REGISTRY_V2                 the MiniLM export promoted (default 2, close to
#                                    version 1; 3 is a MiniLM whose embeddings drift,
#                                    which the drift check rolls back)
# The demo fails unless the rollout finished (promoted or rolled back) with
# no failed request.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
# shellcheck source=lib/server.sh
source scripts/lib/server.sh
# shellcheck source=lib/bodies.sh
source scripts/lib/bodies.sh

serve=0
registry=""
for arg in "$@" ${DEMO_ARGS:-}; do
    case "$arg" in
    --serve) serve=1 ;;
    --registry=mlflow) registry=mlflow ;;
    --registry=) ;;
    *)
        echo "demo: unknown argument $arg (--serve, --registry=mlflow)" >&2
        exit 2
        ;;
    esac
done

CARGO=${CARGO:-cargo}
MODELS=${DEMO_MODELS:-resnet50 minilm yolov8n}
CLIENTS=${DEMO_CLIENTS:-32}
DURATION=${DEMO_DURATION_SECS:-5}
WARMUP=${DEMO_WARMUP_SECS:-1}
RAW_SECS=${DEMO_RAW_SECS:-1}
RAW_ROUNDS=${DEMO_RAW_ROUNDS:-3}
RAW_BATCHES=${DEMO_RAW_BATCH_SIZES:-1,2,4,8,16,32}
THREADS=${DEMO_THREADS:-2}
SWEEP_MODEL=${DEMO_SWEEP_MODEL:-minilm}
SWEEP_FRACTIONS=${DEMO_SWEEP_FRACTIONS:-0.25,0.5,0.75,1,1.25}
SWEEP_SECS=${DEMO_SWEEP_SECS:-4}
PLOT=${DEMO_PLOT:-target/demo/demo-sweep.svg}
mkdir -p "$(dirname "$PLOT")"
CONFIG=examples/multi-model/config/demo.toml
if [[ -n "$registry" ]]; then
    CONFIG=${DEMO_REGISTRY_CONFIG:-examples/multi-model/config/demo-registry.toml}
fi
REG_CLIENTS=${DEMO_REGISTRY_CLIENTS:-8}
REG_WINDOW=${DEMO_REGISTRY_WINDOW_SECS:-5}
REG_PROMOTE_AFTER=${DEMO_REGISTRY_PROMOTE_AFTER_SECS:-10}
REG_TIMEOUT=${DEMO_REGISTRY_TIMEOUT_SECS:-240}
V2=${DEMO_REGISTRY_V2:-2}
started=$(date +%s)

if [[ "${DEMO_SKIP_SETUP:-0}" != 1 ]]; then
    echo "==> setup (venv + model export)"
    t0=$(date +%s)
    bash scripts/setup.sh
    echo "    setup took $(($(date +%s) - t0)) s"
fi

echo "==> building the server, raw-bench and the load generator (release)"
(cd examples && "$CARGO" build --release -p example-multi-model -p example-models -p example-loadgen)
target_dir=${CARGO_TARGET_DIR:-$(cd examples && "$CARGO" metadata --format-version 1 --no-deps | jq -r .target_directory)}
bin="$target_dir/release"
for b in multi-model raw-bench loadgen; do
    [[ -x "$bin/$b" ]] || {
        echo "demo: $bin/$b not found" >&2
        exit 1
    }
done

work=$(mktemp -d)
server_pid=""
load_pid=""
cleanup() {
    if [[ -n "$load_pid" ]] && kill -0 "$load_pid" 2>/dev/null; then
        touch "$work/stop-load"
        kill -TERM "$load_pid" 2>/dev/null || true
        wait "$load_pid" 2>/dev/null || true
    fi
    if [[ -n "$server_pid" ]] && kill -0 "$server_pid" 2>/dev/null; then
        kill -TERM "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [[ -n "$registry" ]]; then
        bash scripts/registry.sh stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

python=.venv/bin/python3
[[ -x "$python" ]] || python=python3
# Request bodies: a few JPEG photos-to-be (generated, as no image data set
# ships with the repo) and a few sentences.
demo_bodies "$work"

if [[ -n "$registry" ]]; then
    MODELS="minilm resnet50"
fi
present=()
for m in $MODELS; do
    if [[ -f "models/$m/1/model.json" ]]; then
        present+=("$m")
    else
        echo "demo: models/$m/1 is missing (scripts/setup.sh exports it); skipping $m" >&2
    fi
done

# The registry: a fresh MLflow store for this run, the exported models
# registered, version 1 of each promoted; the server's config points at it.
registry_prepare() {
    export CONVOY_MLFLOW_DIR="$work/mlflow"
    CONVOY_MLFLOW_PORT=$("$python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    export CONVOY_MLFLOW_PORT
    echo "==> MLflow registry (scripts/registry.sh; store $CONVOY_MLFLOW_DIR)"
    bash scripts/registry.sh start | sed 's/^/    /'
    eval "$(bash scripts/registry.sh env)"
    t0=$(date +%s)
    bash scripts/registry.sh register minilm:1 "minilm:$V2" resnet50:1 2>&1 | grep ' version ' | tee "$work/registered.txt" | sed 's/^/    /'
    echo "    registered in $(($(date +%s) - t0)) s"
    minilm_v1=$(sed -n 's|^minilm version \([0-9]*\) .*/minilm/1 .*|\1|p' "$work/registered.txt")
    minilm_v2=$(sed -n "s|^minilm version \\([0-9]*\\) .*/minilm/$V2 .*|\\1|p" "$work/registered.txt")
    resnet_v1=$(sed -n 's|^resnet50 version \([0-9]*\) .*/resnet50/1 .*|\1|p' "$work/registered.txt")
    [[ -n "$minilm_v1" && -n "$minilm_v2" && -n "$resnet_v1" ]] || {
        echo "demo: registering did not report the versions" >&2
        exit 1
    }
    bash scripts/registry.sh promote minilm "$minilm_v1" --alias champion 2>&1 | grep ' version ' | sed 's/^/    /'
    bash scripts/registry.sh promote resnet50 "$resnet_v1" --stage Production 2>&1 | grep ' version ' | sed 's/^/    /'
    # The copy lives in $work: its models_dir is made absolute, since a
    # config's relative paths are relative to its own folder.
    sed -e "s|^uri = .*|uri = \"$MLFLOW_TRACKING_URI\"|" -e "s|^cache_dir = .*|cache_dir = \"$work/cache\"|" \
        -e "s|^models_dir = .*|models_dir = \"$PWD/models\"|" \
        "$CONFIG" >"$work/demo-registry.toml"
    CONFIG=$work/demo-registry.toml
}

# MiniLM's versions (weight, ready replicas, requests, errors), rollout
# (state, events with reasons) and registry news, from GET /v1/models.
minilm_state() {
    curl -fsS --max-time 2 "$base/v1/models" 2>/dev/null | jq -c '.models[] | select(.name == "minilm")
        | {versions: [.versions[] | {name, weight, ready: .ready_replicas, requests, errors}],
           rollout: (.rollout // null), registry: (.registry // [])}' 2>/dev/null || true
}

# Load in windows of DEMO_REGISTRY_WINDOW_SECS until $work/stop-load exists:
# one JSON summary per window, so the switch shows window by window.
registry_load() {
    local i=0
    while [[ ! -e "$work/stop-load" ]]; do
        "$bin/loadgen" run --url "$base/v1/models/minilm/embed" --text-lines "$work/texts.txt" \
            --concurrency "$REG_CLIENTS" --duration-secs "$REG_WINDOW" --timeout-secs 30 \
            --no-progress --json 2>>"$work/load.err" | jq -c --argjson i "$i" --argjson w "$REG_WINDOW" \
            '{from: ($i * $w), to: (($i + 1) * $w), ok, errors, errors_by_kind, items_per_s, p50_ms, p99_ms}' \
            >>"$work/load.jsonl" || true
        i=$((i + 1))
    done
}

registry_promotion() {
    local started_at prev="" state outcome="" v2_name events_seen=0 news_seen=0
    # Each version's latest request and error counts: a retired version
    # leaves /v1/models, its counts stay here.
    local -A seen_requests=() seen_errors=()
    v2_name=$minilm_v2
    echo "==> MiniLM under load ($REG_CLIENTS clients, ${REG_WINDOW}s windows); promoting version $v2_name to @champion after ${REG_PROMOTE_AFTER}s"
    : >"$work/load.jsonl"
    registry_load &
    load_pid=$!
    started_at=$(date +%s.%N)
    elapsed() { printf '%5.1f' "$(echo "$(date +%s.%N) - $started_at" | bc)"; }
    sleep "$REG_PROMOTE_AFTER"
    state=$(minilm_state)
    before_requests=$(jq '[.versions[].requests] | add // 0' <<<"${state:-null}")
    before_errors=$(jq '[.versions[].errors] | add // 0' <<<"${state:-null}")
    news_seen=$(jq '.registry | length' <<<"${state:-null}")
    echo "[$(elapsed)s] scripts/registry.sh promote minilm $v2_name --alias champion"
    local promoted
    promoted=$(bash scripts/registry.sh promote minilm "$v2_name" --alias champion 2>&1 | grep ' version ' || true)
    echo "[$(elapsed)s] registry: ${promoted:-the promotion failed}"
    local deadline=$(($(date +%s) + REG_TIMEOUT))
    while (($(date +%s) < deadline)); do
        state=$(minilm_state)
        if [[ -z "$state" ]]; then
            sleep 0.5
            continue
        fi
        local name requests errors
        while read -r name requests errors; do
            seen_requests[$name]=$requests
            seen_errors[$name]=$errors
        done < <(jq -r '.versions[] | "\(.name) \(.requests) \(.errors)"' <<<"$state")
        # What the server heard from the registry (new version, download,
        # verification, refusal).
        jq -r --argjson n "$news_seen" '.registry[$n:][]' <<<"$state" | sed "s/^/[$(elapsed)s] server: registry: /"
        news_seen=$(jq '.registry | length' <<<"$state")
        # The rollout of this promotion: each event with its reason.
        if [[ "$(jq -r '.rollout.canary // ""' <<<"$state")" == "$v2_name" ]]; then
            jq -r --argjson n "$events_seen" '.rollout.events[$n:][]
                | "+\(.at_ms / 100 | round / 10)s \(.kind) -> canary \(.canary_percent)%: \(.reason)"' <<<"$state" |
                sed "s/^/[$(elapsed)s] rollout: /"
            events_seen=$(jq '.rollout.events | length' <<<"$state")
        fi
        # The versions, on a change of weight or readiness.
        local shape
        shape=$(jq -c '[.versions[] | {name, weight, ready}]' <<<"$state")
        if [[ "$shape" != "$prev" ]]; then
            echo "[$(elapsed)s] minilm: $(jq -r '[.versions[] | "version \(.name) weight \(.weight) (\(.ready) ready, \(.requests) req, \(.errors) err)"] | join(" | ")' <<<"$state")"
            prev=$shape
        fi
        case "$(jq -r 'select(.rollout.canary == $v) | .rollout.state' --arg v "$v2_name" <<<"$state")" in
        promoted)
            outcome=promoted
            break
            ;;
        rolled_back)
            outcome="rolled back"
            break
            ;;
        esac
        sleep 0.5
    done
    local after_requests=0 after_errors=0 v
    for v in "${!seen_requests[@]}"; do
        after_requests=$((after_requests + seen_requests[$v]))
        after_errors=$((after_errors + seen_errors[$v]))
    done
    echo "[$(elapsed)s] rollout ${outcome:-not finished after ${REG_TIMEOUT}s}"
    # A last window on the new version, then stop the load.
    sleep "$REG_WINDOW"
    touch "$work/stop-load"
    wait "$load_pid" 2>/dev/null || true
    load_pid=""
    echo
    echo "==> load through the promotion (MiniLM /embed, $REG_CLIENTS closed-loop clients)"
    printf '    %-11s %8s %7s %10s %9s %9s\n' window ok errors "seq/s" "p50 ms" "p99 ms"
    jq -r '"    \(.from)-\(.to)s" + " " * (11 - ("\(.from)-\(.to)s" | length))
        + " \(.ok | tostring | (" " * (8 - length)) + .) \(.errors | tostring | (" " * (7 - length)) + .)"
        + " \(.items_per_s * 10 | round / 10 | tostring | (" " * (10 - length)) + .)"
        + " \(.p50_ms * 10 | round / 10 | tostring | (" " * (9 - length)) + .)"
        + " \(.p99_ms * 10 | round / 10 | tostring | (" " * (9 - length)) + .)"' "$work/load.jsonl"
    local ok errors
    ok=$(jq -s 'map(.ok) | add // 0' "$work/load.jsonl")
    errors=$(jq -s 'map(.errors) | add // 0' "$work/load.jsonl")
    echo "    requests the server routed from the promotion to the end of the rollout: $((after_requests - before_requests)), failed: $((after_errors - before_errors))"
    echo "    the whole run (load generator): $ok answered, $errors failed$(jq -rs 'map(.errors_by_kind // {} | to_entries[]) | group_by(.key) | map("\(.[0].key) \(map(.value) | add)") | if length > 0 then " (" + join(", ") + ")" else "" end' "$work/load.jsonl")"
    echo "    rollout: ${outcome:-not finished}; failures = $errors"
    echo "registry demo took $(($(date +%s) - started)) s"
    [[ -n "$outcome" && "$errors" == 0 ]]
}

if [[ -n "$registry" ]]; then
    registry_prepare
fi

# raw_bench MODEL: the model's raw offline throughput at each batch size
# (raw-bench in a process of its own, the same inputs as the load
# generator's), into $work/raw-MODEL.json. Run right before the model's
# served runs: this machine's speed drifts over minutes, and raw and served
# are compared.
raw_bench() {
    echo "==> $1: raw offline throughput (raw-bench, its own process, $THREADS threads, median of $RAW_ROUNDS rounds of ${RAW_SECS}s per batch size)"
    # shellcheck disable=SC2046 # the text option is words on purpose
    "$bin/raw-bench" --model-dir "models/$1/1" --batch-sizes "$RAW_BATCHES" \
        --seconds "$RAW_SECS" --rounds "$RAW_ROUNDS" --threads "$THREADS" \
        $(raw_inputs "$1" "$work") --json >"$work/raw-$1.json"
    jq -r '"    \(.model): " + ([.results[] | "b\(.batch_size) \(.items_per_s * 10 | round / 10)/s"] | join("  "))
        + "   best \((.best.items_per_s // 0) * 10 | round / 10)/s at batch \(.best.batch_size // "-")"' "$work/raw-$1.json"
}

echo "==> starting the server ($CONFIG) on free loopback ports"
start_server demo "$bin" "$work" --config "$CONFIG" --addr 127.0.0.1:0 --grpc-addr 127.0.0.1:0 || exit 1
grep -i "device\|loaded" "$work/server.err" | sed 's/^/    /' | tail -8 || true
echo "    $base  ($(sed -n 's/^grpc listening on /gRPC /p' "$work/server.out"))"

if [[ -n "$registry" ]]; then
    rc=0
    registry_promotion || rc=$?
    if [[ $serve == 1 ]]; then
        echo "==> serving on $base, registry $MLFLOW_TRACKING_URI (Ctrl-C to stop)"
        wait "$server_pid"
    fi
    exit $rc
fi

for m in "${present[@]}"; do
    raw_bench "$m"
    r=$(model_route "$m")
    echo "==> $m: unbatched ($m-unbatched) then batched, 1 and $CLIENTS clients, ${DURATION}s each"
    # shellcheck disable=SC2046 # the body options are words on purpose
    "$bin/loadgen" demo --base "$base" \
        --batched "/v1/models/$m/$r" --unbatched "/v1/models/$m-unbatched/$r" \
        --stats-deployment "$m" $(model_bodies "$m" "$work") \
        --concurrency "1,$CLIENTS" --duration-secs "$DURATION" --warmup-secs "$WARMUP" \
        --server-pid "$server_pid" --json >"$work/served-$m.out"
    grep -v '^\[' "$work/served-$m.out" | sed 's/^/    /'
    grep '^\[' "$work/served-$m.out" | tail -1 >"$work/served-$m.json"
done

if [[ "$SWEEP_MODEL" != none && -s "$work/served-$SWEEP_MODEL.json" ]]; then
    m=$SWEEP_MODEL
    sat=$(jq '[.[].batched.items_per_s] | max' "$work/served-$m.json")
    rates=$(jq -r --arg f "$SWEEP_FRACTIONS" --argjson s "$sat" \
        '[$f | split(",")[] | tonumber * $s | if . < 1 then 1 else . end | . * 10 | round / 10] | map(tostring) | join(",")' <<<null)
    echo "==> open-loop sweep of $m at $rates requests/s (${SWEEP_SECS}s each; latency from intended send time)"
    # shellcheck disable=SC2046
    "$bin/loadgen" sweep --url "$base/v1/models/$m/$(model_route "$m")" $(model_bodies "$m" "$work") \
        --rates "$rates" --duration-secs "$SWEEP_SECS" --warmup-secs 1 \
        --max-outstanding 256 --plot "$PLOT" --title "$m" 2>&1 | sed 's/^/    /'
fi

echo
echo "==> what batching bought (this machine: $(nproc) cores, shared; figures are noisy)"
printf '| %-9s | %9s | %10s | %9s | %13s | %13s | %8s | %21s | %21s | %10s |\n' \
    model "raw best" "served@$CLIENTS" served/raw "unbatched@$CLIENTS" "batched@$CLIENTS" speedup \
    "p50/p99 ms @1 (u/b)" "p50/p99 ms @$CLIENTS (u/b)" "mean batch"
echo "|-----------|-----------|------------|-----------|---------------|---------------|----------|-----------------------|-----------------------|------------|"
for m in "${present[@]}"; do
    [[ -s "$work/served-$m.json" ]] || continue
    jq -r --slurpfile raw "$work/raw-$m.json" --arg m "$m" '
        def f1: . * 10 | round / 10 | tostring;
        def f2: . * 100 | round / 100 | tostring;
        (.[0]) as $one | (.[-1]) as $n | ($raw[0].best.items_per_s // 0) as $best |
        "| \($m) | \($best | f1)/s | \($n.batched.items_per_s | f1)/s | \(if $best > 0 then ($n.batched.items_per_s / $best | f2) else "-" end) | "
        + "\($n.unbatched.items_per_s | f1)/s | \($n.batched.items_per_s | f1)/s | "
        + "\(if $n.unbatched.items_per_s > 0 then ($n.batched.items_per_s / $n.unbatched.items_per_s | f2) + "x" else "-" end) | "
        + "\($one.unbatched.p50_ms | f1)/\($one.unbatched.p99_ms | f1) \($one.batched.p50_ms | f1)/\($one.batched.p99_ms | f1) | "
        + "\($n.unbatched.p50_ms | f1)/\($n.unbatched.p99_ms | f1) \($n.batched.p50_ms | f1)/\($n.batched.p99_ms | f1) | "
        + "\($n.mean_batch_size // 0 | f1) |"' "$work/served-$m.json"
done
echo
echo "==> CPU per request at $CLIENTS clients (batched; /proc of the server's threads and of the load generator)"
for m in "${present[@]}"; do
    [[ -s "$work/served-$m.json" ]] || continue
    jq -r --arg m "$m" '
        def f2: . * 100 | round / 100 | tostring;
        (.[-1].cpu // empty) as $c |
        "    \($m): \($c.compute_ms + $c.server_other_ms + $c.loadgen_ms | f2) ms = forward passes \($c.compute_ms | f2)"
        + " + rest of the server (HTTP, JSON, pre/post-processing, batching) \($c.server_other_ms | f2)"
        + " + load generator \($c.loadgen_ms | f2)"' "$work/served-$m.json"
done
[[ -f "$PLOT" ]] && echo "sweep plot: $PLOT"
echo
bash scripts/demo_drift.sh "$base" "$bin/loadgen" "$work" || echo "demo: the drift phase failed" >&2
echo "demo took $(($(date +%s) - started)) s"

if [[ $serve == 1 ]]; then
    echo "==> serving on $base (Ctrl-C to stop)"
    wait "$server_pid"
fi
