"""The CLI trains under tcmalloc where it is installed (allocator.py), to the weights glibc's malloc gives."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import cli_args, max_difference, weights
from tunesmith.allocator import tcmalloc_library

pytestmark = pytest.mark.skipif(sys.platform != "linux" or tcmalloc_library() is None,
                                reason="needs tcmalloc: apt-get install libtcmalloc-minimal4")


def test_the_cli_trains_under_tcmalloc_to_the_same_weights_and_says_so(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "chat.jsonl", chat_rows(24))
    runs = {}
    for allocator in ("system", "auto"):
        env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "TUNESMITH_ALLOCATOR_RESTARTED")}
        env["TUNESMITH_ALLOCATOR"] = allocator
        done = subprocess.run([sys.executable, "-m", "tunesmith.cli",
                               *cli_args(tmp_path, tiny_model_dir, data, "train.max_steps=4", name=allocator)],
                              env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        run = tmp_path / "runs" / allocator
        manifest = json.loads((run / "manifest.json").read_text())
        memory_line = next(line for line in done.stderr.splitlines() if "memory: " in line)
        runs[allocator] = manifest["machine"]["allocator"], weights(run / "adapter" / "adapter_model.safetensors"), memory_line
    assert runs["system"][0] == "system" and runs["auto"][0] == "tcmalloc"
    assert "apt-get install libtcmalloc-minimal4" in runs["system"][2]  # glibc's peak is not the projection: said
    assert "tcmalloc" not in runs["auto"][2]
    assert max_difference(runs["system"][1], runs["auto"][1]) == 0.0  # where memory comes from changes no number
