"""A run folder read back: the settings it was trained with (config.yaml) and what its training
returned (manifest.json), for the evaluations, predictions and generations that come after it."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import RunError
from tunesmith.training.session import RunResult


def run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml); give the folder `tunesmith train` wrote")
    return load_config(path)


def result_from_manifest(folder: Path) -> RunResult:
    manifest = json.loads((folder / "manifest.json").read_text())
    r = manifest["results"]
    return RunResult(folder, manifest["method"], r["steps"], r["train_loss"], r["val_loss"], r["baseline_val_loss"],
                     r["best_step"], r["stopped_early"], r["train_tokens_per_s"], r["peak_memory_mb"],
                     r.get("train_seconds", 0.0), manifest["outputs"])
