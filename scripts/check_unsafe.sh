#!/usr/bin/env bash
# Fails when `unsafe` code appears anywhere but the files in ALLOWED, or
# when an `unsafe` there has no `// SAFETY:` comment right above it.
#
#   scripts/check_unsafe.sh              check the repository
#   scripts/check_unsafe.sh DIR          check another tree (same layout)
#   scripts/check_unsafe.sh --self-test  check the checker on planted cases
#
# Every .rs file below the root counts (build output in `target/` folders
# and `.git` excepted). `unsafe` is found as a Rust keyword: comments,
# strings and names such as `unsafe_code` do not count. "Right above" means
# the comment block that ends on the line above the statement holding the
# `unsafe` (a statement may start a line or two earlier, e.g. `let p =`
# followed by `unsafe { ... }` on the next line). An `unsafe fn` may state
# its contract in a `# Safety` doc section instead.
set -euo pipefail

# The files where `unsafe` may appear, space-separated:
# - gpu-pool's CUDA backend (cudarc's driver calls);
# - the Rust side of the FFI to example-models' libtorch allocator shim
#   (csrc/convoy_hooks.cpp): calling C++ is `unsafe` whatever it does, so the
#   calls live in this one small file, each with a SAFETY comment, and the
#   functions the shim calls back take integers only (no raw pointers read
#   in Rust).
ALLOWED="gpu-pool/src/backend/cuda.rs examples/models/src/hooks/ffi.rs"

check() {
    python3 - "$1" "$ALLOWED" <<'PY'
import os
import re
import sys

root, allowed = sys.argv[1], sys.argv[2].split()


def strip(src):
    """Blanks comments, strings and char literals, keeping line breaks."""
    out, i, n = [], 0, len(src)

    def blank(s):
        return "".join(c if c == "\n" else " " for c in s)

    while i < n:
        c = src[i]
        if src.startswith("//", i):
            j = src.find("\n", i)
            j = n if j < 0 else j
            out.append(blank(src[i:j]))
            i = j
        elif src.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if src.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif src.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(blank(src[i:j]))
            i = j
        elif re.match(r'b?r#*"', src[i:i + 300]) and (i == 0 or not (src[i - 1].isalnum() or src[i - 1] == "_")):
            m = re.match(r'(b?r)(#*)"', src[i:])
            end = '"' + m.group(2)
            j = src.find(end, i + m.end())
            j = n if j < 0 else j + len(end)
            out.append(blank(src[i:j]))
            i = j
        elif c == '"':
            j = i + 1
            while j < n and src[j] != '"':
                j += 2 if src[j] == "\\" else 1
            out.append(blank(src[i:j + 1]))
            i = j + 1
        elif c == "'":
            # A char literal ('x', '\n', '\u{1F600}') or a lifetime ('a).
            m = re.match(r"'(\\(u\{[0-9a-fA-F]{1,6}\}|x[0-9a-fA-F]{2}|.)|[^\\'\n])'", src[i:i + 12])
            if m:
                out.append(blank(m.group(0)))
                i += m.end()
            else:
                out.append(c)
                i += 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


KEYWORD = re.compile(r"(?<![A-Za-z0-9_])unsafe(?![A-Za-z0-9_])")


def has_safety_comment(lines, code, idx):
    """Whether the comment block right above the statement at line idx says SAFETY."""
    j = idx - 1
    continuation = 0
    # Step over lines that begin the same statement (`let p =`, `if !`).
    while j >= 0 and code[j].strip() and not lines[j].lstrip().startswith("//"):
        if code[j].rstrip().endswith((";", "}", "{", ",")) or continuation == 2:
            return False
        continuation += 1
        j -= 1
    block = []
    while j >= 0 and lines[j].lstrip().startswith(("//", "#[")):
        block.append(lines[j])
        j -= 1
    text = "\n".join(block)
    if "SAFETY:" in text:
        return True
    return "unsafe fn" in code[idx] and "# Safety" in text


problems = []
for dirpath, dirnames, filenames in os.walk(root):
    dirnames[:] = sorted(d for d in dirnames if d not in ("target", ".git"))
    for name in sorted(filenames):
        if not name.endswith(".rs"):
            continue
        path = os.path.join(dirpath, name)
        rel = os.path.relpath(path, root).replace(os.sep, "/")
        with open(path, encoding="utf-8", errors="replace") as f:
            src = f.read()
        lines = src.split("\n")
        code = strip(src).split("\n")
        for idx, line in enumerate(code):
            if not KEYWORD.search(line):
                continue
            where = f"{rel}:{idx + 1}: {lines[idx].strip()}"
            if rel not in allowed:
                problems.append(f"{where}\n    `unsafe` is only allowed in {', '.join(allowed)}")
            elif not has_safety_comment(lines, code, idx):
                problems.append(f"{where}\n    no `// SAFETY:` comment right above")

for p in problems:
    print(p)
if problems:
    print(f"check_unsafe: {len(problems)} problem(s)")
    sys.exit(1)
print(f"check_unsafe: ok (`unsafe` only in {', '.join(allowed)}, each with a SAFETY comment)")
PY
}

self_test() (
    dir=$(mktemp -d)
    trap 'rm -rf "$dir"' EXIT
    mkdir -p "$dir/gpu-pool/src/backend" "$dir/examples/models/src/hooks" "$dir/a/src" "$dir/a/target/debug"
    cuda="$dir/${ALLOWED%% *}"
    cat >"$cuda" <<'RS'
#![allow(unsafe_code)]
// SAFETY: an opaque handle.
unsafe impl Send for H {}
fn f() {
    // SAFETY: the pointer is live.
    let p =
        unsafe { g() };
    let s = "unsafe { in a string }";
    let c = '"'; // unsafe in a comment
    /* unsafe in a block comment */
    let r = r#"unsafe"#;
}
/// # Safety
/// `p` must be live.
unsafe fn h(p: *const u8) {}
RS
    # A clean tree passes, including text that only looks like unsafe code.
    printf '%s\n' '#![forbid(unsafe_code)]' '//! No `unsafe` here.' \
        'fn f<'"'"'a>(x: &'"'"'a str) -> char { let _ = "unsafe"; '"'"'u'"'"' }' >"$dir/a/src/lib.rs"
    echo 'fn f() { unsafe { g() } }' >"$dir/a/target/debug/build.rs"
    check "$dir" >/dev/null || { echo "self-test: a clean tree was refused"; check "$dir"; return 1; }
    # unsafe outside the CUDA backend fails.
    echo 'pub fn f() { unsafe { g() } }' >"$dir/a/src/bad.rs"
    if check "$dir" >/dev/null; then echo "self-test: unsafe block outside cuda.rs passed"; return 1; fi
    echo 'unsafe impl Send for X {}' >"$dir/a/src/bad.rs"
    if check "$dir" >/dev/null; then echo "self-test: unsafe impl outside cuda.rs passed"; return 1; fi
    echo 'pub unsafe fn f() {}' >"$dir/a/src/bad.rs"
    if check "$dir" >/dev/null; then echo "self-test: unsafe fn outside cuda.rs passed"; return 1; fi
    rm "$dir/a/src/bad.rs"
    # Every allowed file may hold unsafe code with SAFETY comments.
    ffi="$dir/examples/models/src/hooks/ffi.rs"
    printf '%s\n' 'pub(super) fn f() -> u64 {' '    // SAFETY: integers only.' '    unsafe { shim() }' '}' >"$ffi"
    check "$dir" >/dev/null || { echo "self-test: the second allowed file was refused"; check "$dir"; return 1; }
    # ... and needs them there too.
    printf '%s\n' 'fn g() {' '    unsafe { shim() };' '}' >>"$ffi"
    if check "$dir" >/dev/null; then echo "self-test: unsafe without SAFETY in the second allowed file passed"; return 1; fi
    rm "$ffi"
    # An unsafe block in cuda.rs without a SAFETY comment fails.
    printf '%s\n' 'fn k() {' '    let x = 1;' '    unsafe { g() };' '}' >>"$cuda"
    if check "$dir" >/dev/null; then echo "self-test: unsafe block without SAFETY passed"; return 1; fi
    echo "check_unsafe self-test: ok"
)

if [[ "${1:-}" == "--self-test" ]]; then
    self_test
else
    check "${1:-$(cd "$(dirname "$0")/.." && pwd)}"
fi
