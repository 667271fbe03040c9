#!/usr/bin/env bash
# Supply-chain checks with cargo-deny (policy in deny.toml) for the root,
# examples/ and fuzz/ workspaces.
#
# licenses, bans and sources always run: they need only Cargo.lock and the
# crates.io index. advisories needs the RustSec database from GitHub; when it
# cannot be fetched (offline, firewalled) that check is skipped with a
# message, never failed. DENY_ADVISORIES=require makes it mandatory.
#
# cargo-deny is installed by scripts/test_setup.sh (make test runs it first);
# this script installs nothing and stops at once when it is missing.
set -euo pipefail

cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}
WORKSPACES=(Cargo.toml examples/Cargo.toml fuzz/Cargo.toml)

if ! "$CARGO" deny --version >/dev/null 2>&1; then
    echo "deny: cargo-deny is missing: install it with 'bash scripts/test_setup.sh' (make test runs it)" >&2
    exit 1
fi
echo "deny: $("$CARGO" deny --version)"

status=0
for manifest in "${WORKSPACES[@]}"; do
    echo "deny: licenses bans sources in ${manifest}"
    "$CARGO" deny --manifest-path "$manifest" --config deny.toml \
        check --hide-inclusion-graph licenses bans sources || status=1
done

# The database is fetched once; each workspace is then checked against it
# without further network access.
if timeout "${DENY_FETCH_TIMEOUT:-120}" "$CARGO" deny --manifest-path Cargo.toml \
    --config deny.toml fetch db >/dev/null 2>&1; then
    for manifest in "${WORKSPACES[@]}"; do
        echo "deny: advisories in ${manifest}"
        "$CARGO" deny --offline --manifest-path "$manifest" --config deny.toml \
            check --hide-inclusion-graph advisories || status=1
    done
elif [[ "${DENY_ADVISORIES:-}" == "require" ]]; then
    echo "deny: advisories FAILED: the RustSec advisory database could not be fetched"
    status=1
else
    echo "deny: advisories SKIPPED: the RustSec advisory database" \
        "(https://github.com/rustsec/advisory-db) could not be fetched (offline?);" \
        "licenses, bans and sources were checked"
fi

if [[ $status -ne 0 ]]; then
    echo "deny: FAILED"
else
    echo "deny: ok"
fi
exit $status
