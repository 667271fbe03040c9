# Sourced by scripts that run the multi-model server (demo.sh,
# dashboard_snapshot.sh).

# start_server LABEL BIN WORK ARGS...: starts BIN/multi-model ARGS in the
# background (stdout in WORK/server.out, stderr in WORK/server.err) and
# waits, at most 180 s, until it has printed its address and /readyz
# answers 200. Sets `server_pid` and `base` (http://host:port); on failure
# says why on stderr, prefixed with LABEL, and returns 1.
start_server() {
    local label=$1 bin=$2 work=$3
    shift 3
    "$bin/multi-model" "$@" >"$work/server.out" 2>"$work/server.err" &
    server_pid=$!
    base=""
    for _ in $(seq 1 1800); do
        [[ -n $base ]] || base=$(sed -n 's/^listening on \(http:\/\/[0-9.:]*\)$/\1/p' "$work/server.out")
        if [[ -n $base ]] && curl -fsS "$base/readyz" >/dev/null 2>&1; then
            return 0
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "$label: the server exited early:" >&2
            tail -30 "$work/server.err" >&2
            return 1
        fi
        sleep 0.1
    done
    echo "$label: the server was not ready in 180 s (address: ${base:-none})" >&2
    return 1
}

# release_server_bins: builds the server and the load generator in release
# (with $CARGO, default cargo) and sets bin to the folder holding them.
release_server_bins() {
    (cd examples && "${CARGO:-cargo}" build --release -p example-multi-model -p example-loadgen)
    local target_dir=${CARGO_TARGET_DIR:-$(cd examples && "${CARGO:-cargo}" metadata --format-version 1 --no-deps | jq -r .target_directory)}
    bin="$target_dir/release"
}

# server_workdir: a temporary folder in work, removed on exit, when the
# server started by start_server (server_pid) is stopped too.
server_workdir() {
    work=$(mktemp -d)
    server_pid=""
    trap server_workdir_cleanup EXIT
}
server_workdir_cleanup() {
    [[ -z "$server_pid" ]] || kill -TERM "$server_pid" 2>/dev/null || true
    rm -rf "$work"
}
