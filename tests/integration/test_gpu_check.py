"""The GPU check's dry run (benchmarks/gpu/check.sh --dry-run): every part of the check the GPU
machine runs (its tests, the training and serving benchmarks, the report) builds and runs once, on
the CPU with tiny shapes, so that the one device call it is made for does not fail on a typo."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
PARTS = ("setup", "environment", "gpu tests", "training", "serving")
SYSTEMS = ("tunesmith", "TRL bf16", "TRL bf16 + Liger")


def test_the_dry_run_reports_every_part_and_each_ran(tmp_path: Path):
    out = tmp_path / "out"
    env = {**os.environ, "OUT": str(out), "PYTHON": sys.executable, "TUNESMITH_BENCH_CACHE": str(tmp_path / "models")}
    done = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu" / "check.sh"), "--dry-run"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    table = (out / "gpu_check.md").read_text()
    report = json.loads((out / "gpu_check.json").read_text())
    assert report["dry_run"] and (out / "check.log").stat().st_size > 0
    for part in PARTS:
        assert f"| {part} |" in table, part
    assert "dry run" in report["parts"]["setup"]["skipped"]
    assert all(report["parts"][part]["rc"] == 0 for part in PARTS[1:])

    tests = report["tests"]
    assert len(tests) >= 10 and {t["test"].split("::")[0] for t in tests} >= {"test_cuda_training", "test_cuda_loss",
                                                                                "test_cuda_memory", "test_cuda_decoding"}
    if not torch.cuda.is_available():
        assert {(t["outcome"], t["message"]) for t in tests} == {("skipped", "needs a CUDA device")}

    rows = report["training"]["rows"]
    assert [(r["size"], r["system"]) for r in rows] == [("tiny", system) for system in SYSTEMS]
    ours = rows[0]
    assert ours["status"] == "ok" and ours["tokens_per_s"] > 0 and 0 < ours["mfu"] < 1 and ours["peak_memory_mb"] > 0
    for row in rows[1:]:  # TRL is a benchmark-only extra: measured where installed, else said
        assert row["status"] == "ok" or row["status"].startswith(("not installed", "needs CUDA")), row
        assert (row["status"] == "ok") == ("tokens_per_s" in row)

    serving = report["serving"]["rows"]
    assert [(r["system"], r["concurrency"]) for r in serving] == [
        ("transformers generate, one at a time", 1), ("tunesmith serve", 1), ("tunesmith serve", 2)]
    for row in serving:  # greedy in fp32: the server's answers are transformers' one-at-a-time answers
        assert row["tokens"] > 0 and row["same_answers"] == row["compared"] == 2, row
