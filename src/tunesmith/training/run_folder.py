"""The run folder: where everything a run writes goes, and the rules for starting or resuming one.

tunesmith deletes only what it made: every run folder carries a marker file written when the folder
was created, and a folder without it is never removed, whatever the settings say. A run that
replaces an earlier one (output.overwrite) removes the old folder only once the new run's data and
model have loaded, so a typo in a model name cannot lose a finished run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tunesmith.config import RunConfig, config_to_dict, dump_config
from tunesmith.data.pipeline import row_ids
from tunesmith.errors import RunError
from tunesmith.files import write_atomic, write_json_atomic
from tunesmith.training import fence
from tunesmith.training.checkpoint import latest_checkpoint, read_train_state

MARKER = ".tunesmith-run"  # written into every folder tunesmith creates for a run; nothing else is ever deleted
VALIDATION_ROWS = "validation_rows.json"  # the ids of the rows the run validated on (tune/trial.py scores them)

# Settings that may differ between a run and its resumption: they change no number the run computes.
_RESUMABLE_CHANGES = {"output.overwrite", "output.report_to", "train.log_every", "train.save_every", "train.keep_checkpoints", "train.device",
                      # memory, not arithmetic: recomputed activations are the same numbers (a run that ran
                      # out of memory resumes with checkpointing on)
                      "train.gradient_checkpointing", "train.memory_limit_gb"}
_RESUMABLE_SECTIONS = ("eval.",)  # evaluation runs after training: changing it changes no trained weight
# A step's rows are processes x train.batch_size: the batch size may change with the number of
# processes as long as their product does not, which resume.check_resume_shape checks against the
# checkpoint (one from before checkpoints recorded their batch size keeps its own).
_CHECKED_AGAINST_CHECKPOINT = {"train.batch_size"}


@dataclass(frozen=True)
class RunFolder:
    path: Path

    @property
    def marker(self) -> Path:
        return self.path / MARKER

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
    def validation_rows(self) -> Path:
        return self.path / VALIDATION_ROWS

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
        check_same_config(run, config, _CHECKED_AGAINST_CHECKPOINT if read_train_state(checkpoint).batch_size else ())
        return run, checkpoint
    check_replaceable(run.path, config.output.overwrite)
    return run, None


def check_replaceable(path: Path, overwrite: bool) -> None:
    """Stop before any work when `path` holds something a new run may not replace."""
    if not path.exists() and not path.is_symlink():
        return
    if path.is_dir() and not path.is_symlink() and not any(path.iterdir()):
        return
    if not (path / MARKER).is_file():
        raise RunError(
            f"{path}: exists and was not created by tunesmith (no {MARKER} file; runs of tunesmith 0.1.0 "
            "had none), so tunesmith will not touch it; choose another output.name, or remove it yourself"
        )
    if not overwrite:
        raise RunError(
            f"{path}: already holds a run; pass --resume to continue it, "
            "--set output.overwrite=true to replace it, or --set output.name=NEW for a new one"
        )


def start_run_folder(run: RunFolder, config: RunConfig, *, resume: bool) -> None:
    """Create the folder (or, with output.overwrite, replace the earlier run in it) and write its
    config; call only once the run's data and model have loaded."""
    fence.check()
    if resume:
        return
    if run.path.exists():
        remove_run_folder(run.path)
    make_run_folder(run.path)
    write_atomic(run.config, dump_config(config))


def make_run_folder(path: Path) -> None:
    """A new, empty folder carrying tunesmith's marker (so that tunesmith may replace it later)."""
    path.mkdir(parents=True)
    write_json_atomic(path / MARKER, {"created_by": "tunesmith", "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")})


def remove_run_folder(path: Path) -> None:
    """Delete a folder tunesmith created for a run; refuse anything else.

    An empty folder counts as free to use. The folder is renamed out of the way first, so that a
    crash halfway through deleting it leaves no half-deleted run under the run's name."""
    if not path.is_dir() or path.is_symlink():
        raise RunError(f"{path}: exists and is not a run folder; choose another output.name or move it away")
    if not any(path.iterdir()):
        path.rmdir()
        return
    if not (path / MARKER).is_file():
        raise RunError(
            f"{path}: exists and was not created by tunesmith (no {MARKER} file), so tunesmith will not "
            "delete it; choose another output.name (or output.dir), or remove the folder yourself"
        )
    doomed = path.with_name(f".{path.name}.removing-{os.getpid()}")
    os.replace(path, doomed)
    shutil.rmtree(doomed)


def write_validation_rows(run: RunFolder, validation: Sequence[Any]) -> None:
    """The ids (file:line) of the rows the run validates on, as its data preparation chose them: a
    task-metric objective (tune/trial.py) scores exactly these rows. Rebuilding the split later cannot
    be trusted: rows left out before it (data.skip_invalid, over-length rows) change its permutation.
    Items without a `where` (a plugged-in method's) record nothing."""
    if all(hasattr(item, "where") for item in validation):
        write_json_atomic(run.validation_rows, {"rows": row_ids(validation)})


def read_validation_rows(run_dir: str | Path) -> list[str] | None:
    """The ids write_validation_rows recorded; None for a run written before runs recorded them."""
    path = RunFolder(Path(run_dir)).validation_rows
    if not path.is_file():
        return None
    return list(json.loads(path.read_text())["rows"])


def check_same_config(run: RunFolder, config: RunConfig, checked_elsewhere: Collection[str] = ()) -> None:
    """Refuse to resume under settings that would make the result differ from an uninterrupted run
    (but for `checked_elsewhere`, whose changes the caller checks)."""
    if not run.config.exists():
        raise RunError(f"{run.path}: has checkpoints but no config.yaml; it was not written by tunesmith train")
    now = _flatten(config_to_dict(config))
    # a setting added to tunesmith since the run started: the run had its default's behaviour
    before = {**_flatten(config_to_dict(RunConfig())), **_flatten(yaml.safe_load(run.config.read_text()))}
    changed = sorted(key for key in before.keys() | now.keys()
                     if before.get(key) != now.get(key) and key not in _RESUMABLE_CHANGES
                     and key not in checked_elsewhere and not key.startswith(_RESUMABLE_SECTIONS))
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
