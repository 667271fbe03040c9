#!/usr/bin/env bash
# The demo's drift phase (scripts/demo.sh runs it after the batching table):
# for each model with [deployment.drift] in the demo configuration, sends
# in-distribution inputs, then shifted ones (darkened, noisy images; code
# instead of prose), and prints each closed window's verdict from
# /v1/models/<m>/drift as it turns.
#
#   scripts/demo_drift.sh BASE_URL LOADGEN WORK_DIR
#
# DRIFT_PHASE_SECS: seconds per phase (default 18: two 8 s windows of
# examples/multi-model/config/demo.toml and the one straddling the switch).
set -euo pipefail
base=${1:?usage: demo_drift.sh BASE_URL LOADGEN WORK_DIR}
loadgen=${2:?}
work=${3:?}
phase_secs=${DRIFT_PHASE_SECS:-18}
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="$root/.venv/bin/python3"
[[ -x $python ]] || python=python3
gen="$root/scripts/python/drift_reference.py"
dir="$work/drift"
mkdir -p "$dir"

# Bodies from the generators the references were made with (other seeds).
"$python" "$gen" images "$dir/images-in" --count 48 --seed 11
"$python" "$gen" images "$dir/images-dark" --count 48 --seed 12 --shift dark
"$python" "$gen" texts "$dir/texts-in.txt" --count 200 --seed 11
"$python" "$gen" texts "$dir/texts-code.txt" --count 200 --seed 12 --shift code

started=$(date +%s.%N)
elapsed() { printf '%5.1f' "$(echo "$(date +%s.%N) - $started" | bc)"; }

# One line per closed window of model $1 not shown yet (window index > $2);
# prints the last index shown.
show_windows() {
    local m=$1 last=$2 label=$3 j idx
    j=$(curl -fsS "$base/v1/models/$m/drift" 2>/dev/null) || { echo "$last"; return; }
    idx=$(jq -r '.window.index' <<<"$j")
    if [[ $idx != "$last" ]]; then
        jq -r --arg t "$(elapsed)" --arg what "$label" '
            "[\($t)s] \(.name) window \(.window.index) (\($what)): \(.window.sampled) of \(.window.requests) requests sampled; "
            + if .tested then
                "\(.drifted_columns)/\(.columns | length) columns drifted (share \(.share * 100 | round / 100)) -> "
                + (if .dataset_drift then "DATA DRIFT" else "no drift" end)
                + (if .drifted_columns > 0 then "  [" + ([.columns[] | select(.drifted) | "\(.column): \(.stattest) \(.score | if . < 0.001 then "<0.001" else (. * 1000 | round / 1000 | tostring) end)"] | join(", ")) + "]" else "" end)
              else "too few samples to test" end' <<<"$j" >&2
    fi
    echo "$idx"
}

phase() {
    local m=$1 label=$2 url=$3
    shift 3
    local last
    last=$(curl -fsS "$base/v1/models/$m/drift" 2>/dev/null | jq -r '.window.index' || echo none)
    "$loadgen" run --url "$url" "$@" --concurrency 4 --duration-secs "$phase_secs" >/dev/null 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        sleep 1
        last=$(show_windows "$m" "$last" "$label")
    done
    wait "$pid" || true
}

for m in resnet50 minilm; do
    if [[ $(curl -s -o /dev/null -w '%{http_code}' "$base/v1/models/$m/drift") == 404 ]]; then
        echo "    $m: no [deployment.drift]; skipped"
        continue
    fi
    echo "==> $m: in-distribution inputs, then shifted ones (${phase_secs}s each); the verdict of every closed window"
    if [[ $m == resnet50 ]]; then
        phase "$m" "in-distribution" "$base/v1/models/$m/classify" --body-dir "$dir/images-in" 2>&1 | sed 's/^/    /'
        phase "$m" "darkened, noisy" "$base/v1/models/$m/classify" --body-dir "$dir/images-dark" 2>&1 | sed 's/^/    /'
    else
        phase "$m" "in-distribution" "$base/v1/models/$m/embed" --text-lines "$dir/texts-in.txt" 2>&1 | sed 's/^/    /'
        phase "$m" "code, not prose" "$base/v1/models/$m/embed" --text-lines "$dir/texts-code.txt" 2>&1 | sed 's/^/    /'
    fi
    echo "    report: $base/v1/models/$m/drift.html"
done
