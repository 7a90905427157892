"""benchmarks/grpo_throughput.py's plumbing on the tiny model: each system trains in its own process
on the same prompts at every step, TRL's reward of each reply is what tunesmith's grader gives it, and
the figures, results.json and the reward plot land. TRL is a benchmark-only extra: where it is not
installed, tunesmith runs alone."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "grpo_throughput.py"


@pytest.mark.slow  # three processes importing torch, transformers and TRL: about 45 s of CPU time
def test_the_grpo_benchmark_runs_each_system_on_the_same_prompts_and_reward(tmp_path: Path, tiny_model_dir: Path):
    systems = ["tunesmith", *(["TRL"] if importlib.util.find_spec("trl") else [])]
    out = tmp_path / "out"
    command = [sys.executable, str(SCRIPT), "--model", str(tiny_model_dir), "--steps", "2", "--threads", "1",
               "--systems", *systems, "--out", str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    report = json.loads((out / "results.json").read_text())
    assert report["checks"] == {"same_prompt_tokens": True, "same_prompts_each_step": True, "same_reward": True}
    assert list(report["summaries"]) == systems and report["machine"]["load_before"]
    rows = [json.loads(line)["messages"][-1]["content"] for line in (out / "prompts.jsonl").read_text().splitlines()]
    for name in systems:
        run = report["runs"][name][0]
        assert len(run["rewards"]) == len(run["step_seconds"]) == len(run["completion_tokens"]) == 2
        assert sorted(p for step in run["prompts"] for p in step) == sorted(rows)  # 2 steps x 4 prompts, each once
        assert all(0.0 <= reward <= 1.0 for reward in run["rewards"])
        assert all(0 < tokens <= 4 * 8 * 8 for tokens in run["completion_tokens"])
        figures = report["summaries"][name]
        assert figures["rollout_tokens_per_s"] > 0 and figures["peak_rss_mb"] > 0
        assert 0 < figures["sample_seconds"] < figures["step_seconds"]
    assert (out / "reward_curve.png").stat().st_size > 0
