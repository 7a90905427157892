#!/usr/bin/env bash
# Create .venv and install tunesmith into it (idempotent: a second call only checks).
#
# On a machine without an NVIDIA GPU, the CPU build of torch goes in first, so that the plain
# `torch` requirement of the package is already met and pip never pulls the CUDA wheels (several GB).
set -euo pipefail

cd "$(dirname "$0")/.."
VENV="${TUNESMITH_VENV:-.venv}"
PYTHON="${PYTHON:-python3}"
TORCH_VERSION="${TUNESMITH_TORCH_VERSION:-2.13.0}"
STAMP="$VENV/.tunesmith-installed"

if [ -f "$STAMP" ] && [ "$STAMP" -nt pyproject.toml ]; then
    exit 0
fi

if [ ! -x "$VENV/bin/python" ]; then
    echo "setup: creating $VENV with $("$PYTHON" --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check -q)

if ! "$VENV/bin/python" -c "import torch" 2>/dev/null; then
    if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
        echo "setup: NVIDIA GPU found; installing torch==$TORCH_VERSION with CUDA"
        "${PIP[@]}" "torch==$TORCH_VERSION"
    else
        echo "setup: no GPU; installing the CPU build of torch==$TORCH_VERSION"
        # The CPU index carries torch==X+cpu; a local wheel (pip's find-links) is taken when the
        # index cannot be reached. --no-deps: torch's own needs come from the normal index below.
        "${PIP[@]}" --retries 1 --no-deps --extra-index-url https://download.pytorch.org/whl/cpu \
            "torch==$TORCH_VERSION"
    fi
fi

echo "setup: installing tunesmith and its dependencies"
"${PIP[@]}" -e ".[dev]"
touch "$STAMP"
echo "setup: done ($("$VENV/bin/python" -c 'import torch, transformers, peft; print(f"torch {torch.__version__}, transformers {transformers.__version__}, peft {peft.__version__}")'))"
