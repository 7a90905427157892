"""On the GPU machine nothing can be fetched, and the tests here need only SmolLM2's tokenizer (the
tiny model is built in code): the GPU check (benchmarks/gpu/check.sh) carries the tokenizer's files
and names their folder in TUNESMITH_GPU_TOKENIZER, which then stands in for the catalog model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    carried = os.environ.get("TUNESMITH_GPU_TOKENIZER")
    if carried:
        return Path(carried)
    from tunesmith.models.catalog import materialize

    return materialize("smollm2-135m-instruct")
