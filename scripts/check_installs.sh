#!/usr/bin/env bash
# Fails when a test, or a script that tests or `make` targets call, installs
# something: a package manager run from parallel tests loses its lock, and a
# test that installs passes only on machines where it already ran. Installing
# is the job of the setup step alone:
#   scripts/setup.sh       the Python venv and the exported models (make demo, make test)
#   scripts/test_setup.sh  Debian packages and cargo tools for the tests (make test)
#
#   scripts/check_installs.sh              check the repository
#   scripts/check_installs.sh DIR          check another tree (same layout)
#   scripts/check_installs.sh --self-test  check the checker on planted cases
#
# Looked at: every .rs file (tests live in tests/ and in #[cfg(test)] modules),
# everything under scripts/, the Makefile and .ci/run; build output
# (`target/`), `.git` and `.venv` excepted. Comment lines do not count; a
# string does (`Command::new("apt-get")` is an install).
set -euo pipefail

check() {
    python3 - "$1" <<'PY'
import os
import re
import sys

root = sys.argv[1]
SETUP = {"scripts/setup.sh", "scripts/test_setup.sh", "scripts/check_installs.sh"}
# What may stand between a program and its `install` argument: quotes, blanks,
# and Rust's `Command::new("cargo").args(["install", ...])`.
SEP = r"""(?:["',\s()\[\]]|\.args?\b)+"""
PATTERNS = [
    ("apt-get", re.compile(r"(?<![\w-])apt-get(?![\w-])")),
    ("apt install", re.compile(r"(?<![\w-])apt" + SEP + r"install\b")),
    ("dpkg -i", re.compile(r"(?<![\w-])dpkg" + SEP + r"(-i|--install)\b")),
    ("pip install", re.compile(r"(?<![\w-])pip3?" + SEP + r"install\b")),
    ("cargo install", re.compile(r"((?<![\w-])cargo|\$\(CARGO\)|\$\{?CARGO\}?)" + SEP + r"(\+[\w.-]+" + SEP + r")?install\b")),
    ("npm install", re.compile(r"(?<![\w-])npm" + SEP + r"(install|i|ci)\b")),
]


def comment(rel, line):
    s = line.lstrip()
    if rel.endswith(".rs"):
        return s.startswith("//")
    return s.startswith("#")


def looked_at(rel):
    if rel in ("Makefile", ".ci/run"):
        return True
    if rel.startswith("scripts/"):
        return True
    return rel.endswith(".rs")


problems = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ("target", ".git", ".venv", "node_modules"))
    for name in sorted(filenames):
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        if not looked_at(rel) or rel in SETUP:
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().split("\n")
        for idx, line in enumerate(lines):
            if comment(rel, line):
                continue
            for what, pattern in PATTERNS:
                if pattern.search(line):
                    problems.append(
                        f"{rel}:{idx + 1}: {line.strip()}\n"
                        f"    `{what}` outside the setup step: install it in scripts/test_setup.sh "
                        "(or scripts/setup.sh for the venv) and fail with a message naming it here"
                    )
for p in problems:
    print(p)
if problems:
    print(f"check_installs: {len(problems)} problem(s)")
    sys.exit(1)
print("check_installs: ok (only scripts/setup.sh and scripts/test_setup.sh install anything)")
PY
}

self_test() (
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    mkdir -p "$dir/scripts" "$dir/a/tests" "$dir/a/target/debug" "$dir/.ci"
    echo 'apt-get install -y chromium; pip install x; cargo install cargo-deny' >"$dir/scripts/test_setup.sh"
    echo 'python -m pip install -r lock' >"$dir/scripts/setup.sh"
    printf '%s\n' '#!/usr/bin/env bash' '# apt-get is never run here' \
        'die "missing: run bash scripts/test_setup.sh"' 'pipeline install_dir=1' >"$dir/scripts/tool.sh"
    printf '%s\n' '// tests never run apt-get or `cargo install`' \
        'fn f() { let _ = "cargo-install-dir"; }' >"$dir/a/tests/t.rs"
    echo 'fn f() { Command::new("apt-get"); }' >"$dir/a/target/debug/build.rs"
    printf '%s\n' 'test:' '	bash scripts/test_setup.sh' >"$dir/Makefile"
    check "$dir" >/dev/null || { echo "self-test: a clean tree was refused"; check "$dir"; return 1; }
    planted=(
        'scripts/prometheus.sh|    "${sudo[@]}" apt-get update -qq'
        'scripts/deny.sh|"$CARGO" install cargo-deny --locked'
        'scripts/python/check.py|subprocess.run([sys.executable, "-m", "pip", "install", "x"])'
        'a/tests/t.rs|    Command::new("apt-get").args(["install", "-y", "prometheus"]);'
        'a/tests/u.rs|    Command::new("cargo").args(["+nightly", "install", "cargo-fuzz"]);'
        'Makefile|	@command -v cargo-fuzz || $(CARGO) +nightly install cargo-fuzz'
        '.ci/run|sudo apt install -y etcd-server'
    )
    for case in "${planted[@]}"; do
        file=${case%%|*}
        line=${case#*|}
        cp -a "$dir" "$dir.case"
        mkdir -p "$(dirname "$dir.case/$file")"
        echo "$line" >>"$dir.case/$file"
        if check "$dir.case" >/dev/null; then
            echo "self-test: an install in $file passed: $line"
            rm -rf "$dir.case"
            return 1
        fi
        rm -rf "$dir.case"
    done
    echo "check_installs self-test: ok"
)

if [[ "${1:-}" == "--self-test" ]]; then
    self_test
else
    check "${1:-$(cd "$(dirname "$0")/.." && pwd)}"
fi
