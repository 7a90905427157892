#!/usr/bin/env bash
# The GPU check in one call (benchmarks/README.md, "GPU check"): the tests marked `gpu`, the training
# benchmark by model size (tunesmith, TRL, TRL with Liger), the serving benchmark at concurrency 1, 16
# and 64; one markdown report ($OUT/gpu_check.md), the raw JSON ($OUT/gpu_check.json) and every
# part's output ($OUT/check.log). Each part runs under its own timeout; a part that fails or runs out
# of time is recorded and the next one runs. Exit status: 1 when any part failed.
#
#   benchmarks/gpu/check.sh             # on the GPU machine: under 8 minutes
#   benchmarks/gpu/check.sh --dry-run   # anywhere, on the CPU: every part once on tiny shapes (CI runs it)
#
# Environment: OUT (the report's folder; default /tmp/gpu-check-out), PYTHON (default python3: the GPU
# image's, which holds PyTorch), TUNESMITH_BENCH_CACHE (where random-weight models are built).
# On the GPU machine the wheels and tokenizer that build_wheels.py put in benchmarks/gpu/carry/ are
# installed first (pip, no index) into a folder of their own on PYTHONPATH.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
cd "$ROOT" || exit 2
DRY=0
case "${1:-}" in
    --dry-run) DRY=1 ;;
    "") ;;
    *) echo "usage: $0 [--dry-run]" >&2; exit 2 ;;
esac
OUT="${OUT:-${TMPDIR:-/tmp}/gpu-check-out}"
PY="${PYTHON:-python3}"
CARRY="$ROOT/benchmarks/gpu/carry"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
CACHE="${TUNESMITH_BENCH_CACHE:-${TMPDIR:-/tmp}/tunesmith-bench-models}"
mkdir -p "$OUT" "$CACHE"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
TOKENIZER=()
if [ -f "$CARRY/tokenizer/tokenizer.json" ]; then
    TOKENIZER=(--tokenizer "$CARRY/tokenizer")
    export TUNESMITH_GPU_TOKENIZER="$CARRY/tokenizer"  # tests/gpu/conftest.py: no SmolLM2 weights needed
fi

# part -> timeout in seconds; on the GPU they add up to 465 s, under 8 minutes with the report
if [ "$DRY" = 1 ]; then
    declare -A LIMIT=([environment]=60 [tests]=120 [training]=150 [serving]=120)
else
    declare -A LIMIT=([setup]=40 [environment]=20 [tests]=90 [training]=240 [serving]=75)
fi

record() {  # part, exit status, milliseconds, timeout, reason it was skipped
    printf '{"part": "%s", "rc": %d, "seconds": %.1f, "timeout": %d, "skipped": "%s"}\n' \
        "$1" "$2" "$(awk "BEGIN {print $3 / 1000}")" "$4" "$5" | sed 's/, "skipped": ""//' >> "$WORK/parts.jsonl"
}

run_part() {  # part, timeout, command...: its output to the console and to its log
    local part=$1 limit=$2
    shift 2
    echo "== $part (at most ${limit} s): $*"
    local began
    began=$(date +%s%N)
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$WORK/$part.log"
    local rc=${PIPESTATUS[0]}
    record "$part" "$rc" $((($(date +%s%N) - began) / 1000000)) "$limit" ""
    echo "== $part: exit $rc"
}

if [ "$DRY" = 1 ]; then
    record setup 0 0 0 "dry run: the carried wheels are for the GPU machine's Python"
elif compgen -G "$CARRY/wheels/*.whl" >/dev/null; then
    run_part setup "${LIMIT[setup]}" "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
        --upgrade --target "$WORK/site" "$CARRY"/wheels/*.whl
else
    echo "no wheels in $CARRY/wheels: run benchmarks/gpu/build_wheels.py first" | tee "$WORK/setup.log"
    record setup 1 0 "${LIMIT[setup]}" ""
fi
export PYTHONPATH="$WORK/site:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"

run_part environment "${LIMIT[environment]}" "$PY" benchmarks/gpu/env_check.py --json "$WORK/env.json"

run_part "gpu tests" "${LIMIT[tests]}" "$PY" -m pytest tests/gpu -m gpu -n 0 -q -p no:cacheprovider \
    --junitxml="$WORK/tests.xml"

if [ "$DRY" = 1 ]; then
    TRAIN=(--device cpu --sizes tiny --row-tokens 128 --batch 2 --steps 2)
    SERVE=(--device cpu --precision fp32 --model random:tiny --requests 4 --concurrency 1 2 --baseline-requests 2
           --max-tokens 4)
else
    TRAIN=(--device cuda --sizes 0.5b 1.5b 3b --row-tokens 1024 --batch 8 --steps 12)
    SERVE=(--device cuda --precision bf16 --model random:0.5b --requests 128 --concurrency 1 16 64
           --requests-per-level 16 64 128 --max-batch 64 --baseline-requests 8 --max-tokens 64)
fi
run_part training "${LIMIT[training]}" "$PY" benchmarks/train_throughput.py "${TRAIN[@]}" --cache "$CACHE" \
    ${TOKENIZER[@]+"${TOKENIZER[@]}"} --json "$WORK/train.json" --budget-s $((LIMIT[training] - 15))

run_part serving "${LIMIT[serving]}" "$PY" benchmarks/serve_throughput.py "${SERVE[@]}" --prompts synthetic \
    --skip-transformers-serve --cache "$CACHE" ${TOKENIZER[@]+"${TOKENIZER[@]}"} --json "$WORK/serve.json"

for part in setup environment "gpu tests" training serving; do
    [ -f "$WORK/$part.log" ] && { echo "===== $part"; cat "$WORK/$part.log"; }
done > "$OUT/check.log"
"$PY" benchmarks/gpu/report.py --work "$WORK" --out "$OUT" $([ "$DRY" = 1 ] && echo --dry-run)
