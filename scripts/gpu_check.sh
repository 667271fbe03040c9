#!/usr/bin/env bash
# The GPU check of libtorch's memory inside each model's gpu-pool tenant
# (example-models' allocator hooks), for a machine with an NVIDIA GPU, the
# venv of scripts/setup.sh (torch with its CUDA wheels) and the exported
# models in models/. One run, about 5 minutes on an H200:
#
#   1. the CUDA tests of the hooks (examples/models/tests/hooks.rs):
#      libtorch's CUDA memory from the tenant's pool, its quota refusing what
#      does not fit, a lease's stream as libtorch's current stream; three
#      models at 0.3 / 0.15 / 0.3 of the GPU under concurrent load, each on
#      its tenant's stream (libtorch's current stream read from inside each
#      pass, Model::last_pass_stream), each peak within its quota, MiniLM
#      pushed past its 0.15 failing alone while the other two keep serving;
#   2. forward-pass throughput with the hooks against without, each model
#      on the GPU (hooks-bench: alternating child processes, fp16).
#
# Its log goes to benches/results/gpu-hooks-<date>.txt (or $OUT/ when set,
# as on the lent device machines); the figures belong in gpu-pool/README.md.
# The multi-model server (feature cuda) does the same: it installs the CUDA
# allocator before loading models and runs each batch on its lease's stream
# (Model::forward_on); this script checks it at the model runtime's level.
set -euo pipefail

cd "$(dirname "$0")/.."
out=${OUT:-benches/results}
mkdir -p "$out"
log="$out/gpu-hooks-$(date -u +%F).txt"
cargo=${CARGO:-cargo}
secs=${SECONDS_PER_RUN:-5}
rounds=${ROUNDS:-3}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi -L >/dev/null 2>&1; then
    echo "gpu_check: no NVIDIA GPU here (nvidia-smi finds none)" >&2
    exit 2
fi
for m in resnet50 minilm yolov8n; do
    if [[ ! -f models/$m/1/model.json ]]; then
        echo "gpu_check: models/$m is missing: run scripts/setup.sh first" >&2
        exit 2
    fi
done

{
    echo "# gpu_check.sh $(date -u +%FT%TZ), commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
} | tee "$log"

# Built first, so the timings below do not share the machine with rustc.
(cd examples && "$cargo" build --release -p example-models --features cuda --bin hooks-bench)
(cd examples && "$cargo" test --release -p example-models --features cuda --test hooks --no-run)

echo "## CUDA tests of the hooks" | tee -a "$log"
failed=0
(cd examples && "$cargo" test --release -p example-models --features cuda --test hooks -- \
    --nocapture --test-threads 1 cuda three_models) 2>&1 | tee -a "$log" || failed=1

echo "## throughput with the hooks against without (fp16 on cuda:0)" | tee -a "$log"
bench=examples/target/release/hooks-bench
for spec in "resnet50 32 1" "minilm 32 128" "yolov8n 16 1"; do
    set -- $spec
    echo "### $1 batch $2" | tee -a "$log"
    "$bench" --model-dir "models/$1/1" --device cuda --fraction 0.3 --batch-size "$2" \
        --seq-len "$3" --seconds "$secs" --rounds "$rounds" 2>&1 | tee -a "$log"
done
echo "gpu_check: log in $log"
if [[ $failed != 0 ]]; then
    echo "gpu_check: the CUDA tests FAILED (see the log)" | tee -a "$log"
    exit 1
fi
