#!/usr/bin/env bash
# A local MLflow Model Registry for convoy's example models.
#
#   scripts/registry.sh start            start the tracking server (or reuse the running one)
#   scripts/registry.sh stop             stop it (its whole process group)
#   scripts/registry.sh status           running or not, and where
#   scripts/registry.sh env              `export MLFLOW_TRACKING_URI=...` for eval
#   scripts/registry.sh register [MODEL[:EXPORT] ...]
#                                        register models/<MODEL>/<EXPORT> as a new
#                                        version (default: resnet50, minilm and
#                                        yolov8n, exports 1 then 2; export 2 is
#                                        made with scripts/export_models.py
#                                        --version 2 when missing); idempotent
#   scripts/registry.sh promote MODEL VERSION [--alias A] [--stage S]
#                                        default: --alias champion --stage Production
#                                        (archive_existing_versions, so no stage conflict)
#   scripts/registry.sh show [MODEL ...] versions, stages, aliases
#
# The server: the project's .venv mlflow on 127.0.0.1, a sqlite backend store
# and artifacts served by the tracking server from a local folder, both under
# CONVOY_MLFLOW_DIR (default .mlflow/, git-ignored); port CONVOY_MLFLOW_PORT
# (default 5000). Background job execution is off: the registry needs none.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

dir=${CONVOY_MLFLOW_DIR:-$root/.mlflow}
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
pidfile="$dir/server.pid"
portfile="$dir/server.port"
venv=${VENV:-$root/.venv}
python="$venv/bin/python3"
models=(resnet50 minilm yolov8n)

die() {
    echo "registry: $*" >&2
    exit 1
}

# The port of the server this folder's store belongs to: the running one's,
# else CONVOY_MLFLOW_PORT, else 5000.
port() {
    if [[ -n "${CONVOY_MLFLOW_PORT:-}" ]]; then
        echo "$CONVOY_MLFLOW_PORT"
    elif [[ -s "$portfile" ]] && running; then
        cat "$portfile"
    else
        echo 5000
    fi
}

running() {
    [[ -s "$pidfile" ]] && kill -0 "$(cat "$pidfile")" 2>/dev/null
}

healthy() {
    curl -fsS --max-time 2 "http://127.0.0.1:$1/health" >/dev/null 2>&1
}

uri() {
    echo "http://127.0.0.1:$(port)"
}

start() {
    local p
    p=$(port)
    if running && [[ "$(cat "$portfile" 2>/dev/null)" == "$p" ]] && healthy "$p"; then
        echo "registry: MLflow already running at http://127.0.0.1:$p (pid $(cat "$pidfile"), store ${dir#"$root"/})"
        return
    fi
    running && stop
    if healthy "$p" || (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
        die "127.0.0.1:$p is taken by another process: set CONVOY_MLFLOW_PORT"
    fi
    [[ -x "$venv/bin/mlflow" ]] || die "$venv/bin/mlflow is missing: run make setup"
    mkdir -p "$dir/artifacts"
    # Its own session and process group (setsid), so stop can end its
    # workers with it.
    MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false setsid "$venv/bin/mlflow" server \
        --host 127.0.0.1 --port "$p" --workers 1 \
        --backend-store-uri "sqlite:///$dir/mlflow.db" \
        --serve-artifacts --artifacts-destination "$dir/artifacts" \
        >"$dir/server.log" 2>&1 </dev/null &
    echo $! >"$pidfile"
    echo "$p" >"$portfile"
    local t0=$SECONDS
    until healthy "$p"; do
        if ! running; then
            tail -20 "$dir/server.log" >&2
            rm -f "$pidfile"
            die "MLflow exited while starting (log: $dir/server.log)"
        fi
        ((SECONDS - t0 < 180)) || {
            stop
            die "MLflow not healthy after 180 s (log: $dir/server.log)"
        }
        sleep 0.5
    done
    echo "registry: MLflow running at http://127.0.0.1:$p (pid $(cat "$pidfile"), store ${dir#"$root"/}, took $((SECONDS - t0)) s)"
}

stop() {
    if ! running; then
        rm -f "$pidfile"
        echo "registry: MLflow is not running (store ${dir#"$root"/})"
        return
    fi
    local pid
    pid=$(cat "$pidfile")
    kill -s TERM -- "-$pid" 2>/dev/null || kill -s TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    kill -s KILL -- "-$pid" 2>/dev/null || true
    rm -f "$pidfile"
    echo "registry: MLflow stopped (pid $pid)"
}

need_server() {
    running && healthy "$(port)" || die "MLflow is not running: scripts/registry.sh start"
    export MLFLOW_TRACKING_URI
    MLFLOW_TRACKING_URI=$(uri)
}

cmd=${1:-}
[[ $# -gt 0 ]] && shift
case "$cmd" in
start) start ;;
stop) stop ;;
status)
    if running && healthy "$(port)"; then
        echo "registry: MLflow running at $(uri) (pid $(cat "$pidfile"), store ${dir#"$root"/})"
    else
        echo "registry: MLflow is not running (store ${dir#"$root"/})"
        exit 3
    fi
    ;;
env) echo "export MLFLOW_TRACKING_URI=$(uri)" ;;
register)
    need_server
    items=("$@")
    if [[ ${#items[@]} == 0 ]]; then
        for m in "${models[@]}"; do items+=("$m:1" "$m:2"); done
    fi
    for i in "${!items[@]}"; do
        [[ "${items[$i]}" == *:* ]] || items[i]="${items[$i]}:1"
        m=${items[$i]%%:*}
        e=${items[$i]#*:}
        if [[ ! -f "models/$m/$e/model.json" && " ${models[*]} " == *" $m "* ]]; then
            echo "registry: exporting models/$m/$e (scripts/export_models.py --version $e)"
            "$python" scripts/export_models.py --out models --only "$m" --version "$e" 2>&1 | grep '^exported' || true
        fi
    done
    "$python" scripts/python/registry.py register "${items[@]}"
    ;;
promote)
    need_server
    [[ $# -ge 2 ]] || die "usage: scripts/registry.sh promote MODEL VERSION [--alias A] [--stage S]"
    if [[ $# == 2 ]]; then
        set -- "$1" "$2" --alias champion --stage Production
    fi
    "$python" scripts/python/registry.py promote "$@"
    ;;
show)
    need_server
    [[ $# -gt 0 ]] || set -- "${models[@]}"
    "$python" scripts/python/registry.py show "$@"
    ;;
*)
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
    [[ -z "$cmd" || "$cmd" == help || "$cmd" == -h || "$cmd" == --help ]] || exit 2
    ;;
esac
