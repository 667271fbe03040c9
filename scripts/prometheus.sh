#!/usr/bin/env bash
# A local Prometheus for convoy's server: Debian's `prometheus` package, run
# as a plain process on 127.0.0.1 (no systemd), with the configuration and
# rules in observability/.
#
#   scripts/prometheus.sh require            exit 1 with a message when Prometheus is not installed
#   scripts/prometheus.sh start TARGET [INTERVAL]
#                                            scrape TARGET (host:port) every INTERVAL
#                                            (default 1s); prints PROMETHEUS_URL=... and
#                                            PROMETHEUS_DIR=... (the state directory)
#   scripts/prometheus.sh stop DIR           stop the Prometheus started in DIR, remove DIR
#   scripts/prometheus.sh check              promtool: check and unit-test the rules, and
#                                            check every dashboard query's syntax
#   scripts/prometheus.sh promtool ARGS...   run promtool
#
# PROMETHEUS_PORT picks the port (default: a free one).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
obs="$root/observability"
prometheus=/usr/bin/prometheus
promtool=/usr/bin/promtool

die() { echo "prometheus.sh: $*" >&2; exit 1; }

# Tests run this script in parallel: it never installs anything (a package
# manager run twice at once loses its lock). scripts/test_setup.sh, run once
# by `make test` before any test, installs Debian's `prometheus` package.
require() {
    if [[ -x $prometheus && -x $promtool ]]; then
        return 0
    fi
    die "$prometheus or $promtool is missing: Debian's package 'prometheus' provides them; install it with 'bash scripts/test_setup.sh' (make test runs it)"
}

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
    local target=${1:?usage: prometheus.sh start TARGET [INTERVAL]} interval=${2:-1s}
    local host_port='^[A-Za-z0-9._-]+:[0-9]+$' ipv6='^\[[0-9A-Fa-f:]+\]:[0-9]+$'
    [[ $target =~ $host_port || $target =~ $ipv6 ]] || die "bad scrape target (want host:port): $target"
    [[ $interval =~ ^[0-9]+(ms|s|m)$ ]] || die "bad scrape interval: $interval"
    require
    local port=${PROMETHEUS_PORT:-$(free_port)}
    local dir
    dir=$(mktemp -d "${TMPDIR:-/tmp}/convoy-prometheus.XXXXXX")
    mkdir -p "$dir/data"
    sed -e "s|__TARGET__|$target|g" -e "s|__INTERVAL__|$interval|g" -e "s|__RULES__|$obs/rules|g" \
        "$obs/prometheus.yml" > "$dir/prometheus.yml"
    "$prometheus" --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
        --web.listen-address="127.0.0.1:$port" --log.level=warn \
        > "$dir/prometheus.log" 2>&1 &
    echo $! > "$dir/prometheus.pid"
    local url="http://127.0.0.1:$port"
    for _ in $(seq 1 200); do
        if curl -fsS "$url/-/ready" >/dev/null 2>&1; then
            echo "PROMETHEUS_URL=$url"
            echo "PROMETHEUS_DIR=$dir"
            return 0
        fi
        kill -0 "$(cat "$dir/prometheus.pid")" 2>/dev/null || break
        sleep 0.1
    done
    cat "$dir/prometheus.log" >&2
    stop "$dir"
    die "Prometheus did not become ready on $url"
}

stop() {
    local dir=${1:?usage: prometheus.sh stop DIR}
    [[ -f $dir/prometheus.pid ]] || die "$dir holds no prometheus.pid"
    local pid
    pid=$(cat "$dir/prometheus.pid")
    if kill "$pid" 2>/dev/null; then
        for _ in $(seq 1 100); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    fi
    rm -rf "$dir"
}

# Every PromQL expression of the dashboard and of the rules as a recording
# rule, so that promtool checks their syntax.
all_queries_as_rules() {
    python3 - "$obs/grafana/dashboard.json" "$obs/rules/convoy.yml" <<'PY'
import json, sys
def walk(node):
    if isinstance(node, dict):
        if isinstance(node.get("expr"), str):
            yield node["expr"]
        for v in node.values():
            yield from walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from walk(v)
exprs = list(walk(json.load(open(sys.argv[1]))))
if not exprs:
    sys.exit("no expressions in the dashboard")
print("groups:\n  - name: dashboard_queries\n    rules:")
for i, e in enumerate(exprs):
    print(f"      - record: dashboard_query_{i}\n        expr: {json.dumps(e)}")
PY
}

check() {
    require
    local tmp
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' RETURN
    sed -e "s|__TARGET__|127.0.0.1:8080|g" -e "s|__INTERVAL__|1s|g" -e "s|__RULES__|$obs/rules|g" \
        "$obs/prometheus.yml" > "$tmp/prometheus.yml"
    "$promtool" check config "$tmp/prometheus.yml"
    "$promtool" check rules "$obs/rules/convoy.yml"
    "$promtool" test rules "$obs/rules/convoy_test.yml"
    all_queries_as_rules > "$tmp/dashboard_rules.yml"
    "$promtool" check rules "$tmp/dashboard_rules.yml"
}

cmd=${1:-}
shift || true
case $cmd in
    require) require ;;
    start) start "$@" ;;
    stop) stop "$@" ;;
    check) check ;;
    promtool) require; exec "$promtool" "$@" ;;
    *) die "usage: prometheus.sh require|start TARGET [INTERVAL]|stop DIR|check|promtool ARGS..." ;;
esac
