#!/usr/bin/env bash
# Installs, once and serially, everything on the system that convoy's tests
# need beyond the Python venv (scripts/setup.sh): Debian packages and cargo
# tools. `make test` runs it before any test binary starts; tests and the
# scripts they call never install anything themselves: when something listed
# here is missing they fail at once, naming it and this script.
#
#   scripts/test_setup.sh          the packages and tools `make test` needs
#   scripts/test_setup.sh --check  install nothing: list what is missing, exit 1 if any
#   scripts/test_setup.sh fuzz     nightly's cargo-fuzz for `make fuzz`
#   scripts/test_setup.sh profile  linux-perf and inferno (flame graphs) for `make profile`
#
# Idempotent: when everything is present it only looks (well under a second)
# and runs no package manager. `make demo` does not call it.
set -euo pipefail
start_ms=$(($(date +%s%N) / 1000000))
CARGO=${CARGO:-cargo}

# Debian package => a file it installs, checked to decide whether it is present.
# chromium: the /docs page test (examples/multi-model/tests/docs.rs).
# prometheus: the rules and dashboard queries against a real Prometheus
#   (examples/multi-model/tests/prometheus.rs, scripts/prometheus.sh).
# etcd-server: convoy-remote's etcd endpoint source and registration, tested
#   against a real etcd the tests start on loopback (remote/tests/etcd.rs).
declare -A PACKAGES=(
    [chromium]=/usr/bin/chromium
    [etcd-server]=/usr/bin/etcd
    [prometheus]=/usr/bin/promtool
)

# cargo tool => the `cargo` subcommand that proves it is installed.
declare -A CARGO_TOOLS=(
    [cargo-deny]=deny
)

say() { echo "test_setup: $*"; }

missing_packages() {
    local p
    for p in "${!PACKAGES[@]}"; do
        [[ -x ${PACKAGES[$p]} ]] || echo "$p"
    done | sort
}

missing_tools() {
    local t
    for t in "${!CARGO_TOOLS[@]}"; do
        "$CARGO" "${CARGO_TOOLS[$t]}" --version >/dev/null 2>&1 || echo "$t"
    done | sort
}

install_packages() {
    local want=("$@")
    [[ ${#want[@]} -gt 0 ]] || return 0
    command -v apt-get >/dev/null ||
        { say "apt-get not found: install the packages ${want[*]} by hand"; return 1; }
    local sudo=()
    [[ $(id -u) -eq 0 ]] || sudo=(sudo)
    say "installing Debian packages: ${want[*]}"
    "${sudo[@]}" apt-get update -qq
    # A package's systemd unit (prometheus has one) may not start in a
    # container; only the binaries are used, so the result is judged by the
    # files below, not by apt-get's exit status alone.
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends \
        "${want[@]}" || true
    local p failed=()
    for p in "${want[@]}"; do
        [[ -x ${PACKAGES[$p]} ]] || failed+=("$p")
    done
    if [[ ${#failed[@]} -gt 0 ]]; then
        say "apt-get install did not provide: ${failed[*]}"
        return 1
    fi
}

install_tools() {
    local t
    for t in "$@"; do
        say "installing $t (cargo, --locked: a few minutes the first time)"
        "$CARGO" install "$t" --locked
    done
}

case ${1:-} in
    --check)
        mapfile -t pkgs < <(missing_packages)
        mapfile -t tools < <(missing_tools)
        [[ ${#pkgs[@]} -eq 0 ]] || say "missing Debian packages: ${pkgs[*]}"
        [[ ${#tools[@]} -eq 0 ]] || say "missing cargo tools: ${tools[*]}"
        [[ ${#pkgs[@]} -eq 0 && ${#tools[@]} -eq 0 ]] || exit 1
        say "everything the tests need is installed"
        exit 0
        ;;
    fuzz)
        if ! "$CARGO" +nightly fuzz --version >/dev/null 2>&1; then
            say "installing cargo-fuzz for the nightly toolchain"
            "$CARGO" +nightly install cargo-fuzz --locked
        fi
        exit 0
        ;;
    profile)
        if ! command -v perf >/dev/null; then
            PACKAGES=([linux-perf]=/usr/bin/perf)
            install_packages linux-perf
        fi
        if ! command -v inferno-flamegraph >/dev/null; then
            install_tools inferno
        fi
        exit 0
        ;;
    "") ;;
    *)
        echo "usage: scripts/test_setup.sh [--check|fuzz|profile]" >&2
        exit 2
        ;;
esac

mapfile -t pkgs < <(missing_packages)
mapfile -t tools < <(missing_tools)
if [[ ${#pkgs[@]} -eq 0 && ${#tools[@]} -eq 0 ]]; then
    say "nothing to install (${!PACKAGES[*]} ${!CARGO_TOOLS[*]} present)"
fi
install_packages "${pkgs[@]}"
install_tools "${tools[@]}"
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
printf 'test_setup: done in %d.%03d s\n' $((elapsed_ms / 1000)) $((elapsed_ms % 1000))
