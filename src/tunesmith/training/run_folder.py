"""The run folder: where everything a run writes goes, and the rules for starting or resuming one."""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from tunesmith.config import RunConfig, config_to_dict, dump_config
from tunesmith.errors import RunError
from tunesmith.training.checkpoint import latest_checkpoint

# Settings that may differ between a run and its resumption: they change no number the run computes.
_RESUMABLE_CHANGES = {"output.overwrite", "train.log_every", "train.save_every", "train.keep_checkpoints", "train.device"}
_RESUMABLE_SECTIONS = ("eval.",)  # evaluation runs after training: changing it changes no trained weight


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def config(self) -> Path:
        return self.path / "config.yaml"

    @property
    def manifest(self) -> Path:
        return self.path / "manifest.json"

    @property
    def metrics(self) -> Path:
        return self.path / "metrics.jsonl"

    @property
    def loss_plot(self) -> Path:
        return self.path / "loss.png"

    @property
    def task(self) -> Path:
        return self.path / "task.json"

    @property
    def eval_dir(self) -> Path:
        return self.path / "eval"

    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def adapter(self) -> Path:
        return self.path / "adapter"

    @property
    def model(self) -> Path:
        return self.path / "model"


def run_name(config: RunConfig) -> str:
    if config.output.name:
        return config.output.name
    data = Path(config.data.train or "data").name
    for suffix in (".jsonl", ".json", ".csv", ".tsv", ".parquet"):
        data = data.removesuffix(suffix)
    model = Path(config.model.name.rstrip("/")).name.removesuffix(".gguf")
    tuning = "lora" if config.lora.enabled else "full"
    return re.sub(r"[^A-Za-z0-9._-]+", "-", f"{data}-{model}-{config.train.method}-{tuning}").lower()


def check_run_folder(config: RunConfig, *, resume: bool) -> tuple[RunFolder, Path | None]:
    """The run folder and the checkpoint to resume from; changes nothing on disk."""
    run = RunFolder(Path(config.output.dir) / run_name(config))
    if resume:
        checkpoint = latest_checkpoint(run.checkpoints)
        if checkpoint is None:
            raise RunError(f"{run.path}: no checkpoint to resume from; run without --resume to start this run")
        check_same_config(run, config)
        return run, checkpoint
    if (run.config.exists() or run.checkpoints.exists()) and not config.output.overwrite:
        raise RunError(
            f"{run.path}: already holds a run; pass --resume to continue it, "
            "--set output.overwrite=true to replace it, or --set output.name=NEW for a new one"
        )
    return run, None


def start_run_folder(run: RunFolder, config: RunConfig, *, resume: bool) -> None:
    """Create (or, with output.overwrite, replace) the folder; call only once the inputs are checked."""
    if resume:
        return
    if run.path.exists():
        shutil.rmtree(run.path)
    run.path.mkdir(parents=True)
    run.config.write_text(dump_config(config))


def check_same_config(run: RunFolder, config: RunConfig) -> None:
    """Refuse to resume under settings that would make the result differ from an uninterrupted run."""
    if not run.config.exists():
        raise RunError(f"{run.path}: has checkpoints but no config.yaml; it was not written by tunesmith train")
    before = _flatten(yaml.safe_load(run.config.read_text()))
    now = _flatten(config_to_dict(config))
    changed = sorted(key for key in before.keys() | now.keys()
                     if before.get(key) != now.get(key) and key not in _RESUMABLE_CHANGES
                     and not key.startswith(_RESUMABLE_SECTIONS))
    if changed:
        details = ", ".join(f"{key}: {before.get(key)!r} -> {now.get(key)!r}" for key in changed[:5])
        raise RunError(
            f"{run.path}: cannot resume with different settings ({details}); use the run's own settings "
            f"(in {run.config}) or start a new run with --set output.name=NEW"
        )


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    flat: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "columns":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat
