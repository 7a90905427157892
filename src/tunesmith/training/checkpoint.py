"""Checkpoints that a crash cannot corrupt, and that resume exactly.

A checkpoint is a folder written under a temporary name, every file flushed to disk, then renamed
into place: a folder named `step-NNNNNNN` is always complete. It holds the trainable weights, the
AdamW moments, the random-number state and the loop state (step, epoch, position in the data), all
in safetensors and JSON.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tunesmith.errors import RunError

_STEP_DIR = re.compile(r"^step-(\d+)$")
BEST = "best"


@dataclass
class TrainState:
    """Where the loop is; saved with each checkpoint."""

    step: int = 0  # optimizer steps done
    epoch: int = 0
    micro_index: int = 0  # next micro-batch of `epoch`
    tokens_seen: int = 0
    loss_tokens_seen: int = 0
    train_seconds: float = 0.0
    baseline_val_loss: float | None = None  # before the first step
    best_val_loss: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    last_eval: list[float] | None = None  # [validation loss, mean training loss] at the last evaluation
    stopped_early: bool = False
    data_fingerprint: str = ""
    processes: int = 1  # a step's rows are processes x train.batch_size: a resume needs as many


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: TrainState) -> Path:
    """Write `folder` atomically; returns it."""
    staging = folder.parent / f".partial-{folder.name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    save_file(trainable_state(model), staging / "trainable.safetensors")
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, staging / "optimizer.safetensors")
        _write_json(staging / "optimizer.json", meta)
    save_file(_rng_tensors(), staging / "rng.safetensors")
    _write_json(staging / "state.json", asdict(state))
    for file in staging.iterdir():
        _fsync(file)
    old = folder.parent / f".old-{folder.name}"
    if folder.exists():
        if old.exists():
            shutil.rmtree(old)
        os.replace(folder, old)
    os.replace(staging, folder)
    _fsync(folder.parent)
    if old.exists():
        shutil.rmtree(old)
    return folder


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> TrainState:
    """Restore weights, optimizer, RNG and loop state from `folder`."""
    try:
        weights = load_file(folder / "trainable.safetensors")
        optimizer_files = None
        if optimizer is not None and (folder / "optimizer.safetensors").is_file():
            optimizer_files = load_file(folder / "optimizer.safetensors"), json.loads((folder / "optimizer.json").read_text())
        rng = load_file(folder / "rng.safetensors")
        state = TrainState(**json.loads((folder / "state.json").read_text()))
    except (OSError, ValueError, TypeError, SafetensorError) as exc:
        raise RunError(f"{folder}: the checkpoint cannot be read ({type(exc).__name__}: {str(exc)[:160]}); move that "
                       "folder away to resume from the one before it, or start a new run") from None
    expected = trainable_state(model)
    mismatched = sorted(set(expected) ^ set(weights)) + sorted(
        name for name in set(expected) & set(weights) if expected[name].shape != weights[name].shape)
    if mismatched:
        raise RunError(f"{folder}: the checkpoint does not match the model being trained ({len(mismatched)} tensors "
                       f"differ, e.g. {', '.join(mismatched[:2])}): the model or its adapters changed since the "
                       "checkpoint was written; resume with the original model and settings, or start a new run")
    with torch.no_grad():
        parameters = dict(model.named_parameters())
        for name, value in weights.items():
            parameters[name].copy_(value)
    if optimizer_files is not None:
        optimizer.load_state_dict(_unflatten_optimizer(*optimizer_files))
    _restore_rng(rng)
    return state


def list_checkpoints(checkpoints: Path) -> list[Path]:
    """Complete step checkpoints, oldest first."""
    if not checkpoints.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in checkpoints.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(checkpoints: Path) -> Path | None:
    found = list_checkpoints(checkpoints)
    return found[-1] if found else None


def step_folder(checkpoints: Path, step: int) -> Path:
    return checkpoints / f"step-{step:07d}"


def prune_checkpoints(checkpoints: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints, and leftovers of interrupted writes."""
    for stale in checkpoints.glob(".partial-*"):
        shutil.rmtree(stale, ignore_errors=True)
    for old in list_checkpoints(checkpoints)[:-keep]:
        shutil.rmtree(old)


def recover_best(checkpoints: Path) -> Path | None:
    """The best checkpoint, also when a crash came between replacing the old one and the new one."""
    best = checkpoints / BEST
    old = checkpoints / f".old-{BEST}"
    if not best.exists() and old.exists():
        os.replace(old, best)
    return best if best.exists() else None


def _flatten_optimizer(state_dict: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, values in state_dict["state"].items():
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{param_id}.{key}"] = value.detach().contiguous()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state_dict["param_groups"], "scalars": scalars}


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        param_id, key = name.split(".", 1)
        state.setdefault(int(param_id), {})[key] = value
    for param_id, values in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}


def _rng_tensors() -> dict[str, torch.Tensor]:
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for index, rng in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = rng
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
