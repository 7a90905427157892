"""`--estimate` probes the run it describes: the same steps, tokens and validation passes."""

from __future__ import annotations

import json
from pathlib import Path

from tests.integration.helpers import tiny_config
from tunesmith.runs import train
from tunesmith.training.estimate import estimate_run


def test_the_estimate_counts_what_the_run_then_does(tmp_path: Path, tiny_model_dir: Path, chat_file: Path):
    config = tiny_config(tmp_path, tiny_model_dir, chat_file, "train.gradient_accumulation=2", name="estimated")
    estimate = estimate_run(config)
    assert not (tmp_path / "runs" / "estimated").exists()  # the probe trains nothing into the run folder
    result = train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    assert estimate.steps == result.steps == len(steps)
    assert estimate.tokens == sum(r["tokens"] for r in steps)
    assert estimate.loss_tokens == sum(r["loss_tokens"] for r in steps)
    assert estimate.evaluations == sum("val_loss" in r for r in records)
    assert estimate.wall_seconds > 0 and estimate.peak_memory_mb > 0
    parts = estimate.setup_seconds + estimate.train_seconds + estimate.eval_seconds + estimate.save_seconds
    assert abs(estimate.wall_seconds - parts) < 0.5  # the total is its parts (each rounded to 0.1 s)
