"""A run killed with SIGKILL and resumed ends with the same weights as one never interrupted."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import chat_rows, write_jsonl
from tests.integration.helpers import cli_args, max_difference, weights

SETTINGS = ["train.max_steps=150", "train.save_every=10", "train.eval_every=25", "train.batch_size=2",
            "train.gradient_accumulation=2", "lora.dropout=0.1", "train.warmup_ratio=0.1", "train.keep_checkpoints=2"]


def tunesmith_command(args: list[str]) -> list[str]:
    return [sys.executable, "-m", "tunesmith.cli", *args]


def losses_by_step(run: Path) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r["loss"] for r in records if "loss" in r}


def test_resume_after_sigkill_matches_an_uninterrupted_run(tmp_path: Path, tiny_model_dir: Path):
    data = write_jsonl(tmp_path / "rows.jsonl", chat_rows(200, seed=11))
    reference = subprocess.run(tunesmith_command(cli_args(tmp_path, tiny_model_dir, data, *SETTINGS, name="reference")),
                               capture_output=True, text=True, timeout=600)
    assert reference.returncode == 0, reference.stderr[-2000:]

    killed_args = cli_args(tmp_path, tiny_model_dir, data, *SETTINGS, name="killed")
    run = tmp_path / "runs" / "killed"
    process = subprocess.Popen(tunesmith_command(killed_args), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while not (run / "checkpoints" / "step-0000040").exists():
        assert process.poll() is None, "the run ended before it could be killed"
        assert time.monotonic() < deadline, "no checkpoint appeared in time"
        time.sleep(0.002)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    assert not (run / "manifest.json").exists()  # it really died mid-run
    steps_logged_before_resume = max(losses_by_step(run))
    assert 40 <= steps_logged_before_resume < 150

    resumed = subprocess.run(tunesmith_command([*killed_args, "--resume"]), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming from step-" in resumed.stderr

    adapter = "adapter/adapter_model.safetensors"
    assert max_difference(weights(tmp_path / "runs" / "reference" / adapter), weights(run / adapter)) < 1e-6
    reference_losses, resumed_losses = losses_by_step(tmp_path / "runs" / "reference"), losses_by_step(run)
    assert sorted(resumed_losses) == list(range(1, 151))  # each step logged once, the replayed ones replaced
    assert all(abs(reference_losses[s] - resumed_losses[s]) < 1e-5 for s in reference_losses)


def test_resume_after_a_torn_metrics_line(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    import tunesmith
    from tests.integration.helpers import tiny_config

    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.max_steps=4", "train.save_every=2", "train.eval_every=2")
    result = tunesmith.train(config, show_progress=False)
    with open(result.run_dir / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 5, "loss": 0.12')  # a kill in the middle of writing a line
    resumed = tunesmith.train(config, resume=True, show_progress=False)
    assert resumed.steps == 4
    lines = (result.run_dir / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["step"] <= 4 for line in lines)
