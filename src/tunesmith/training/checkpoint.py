"""Checkpoints that a crash cannot corrupt, and that resume exactly.

A checkpoint is a folder written under a temporary name, every file flushed to disk, then renamed
into place: a folder named `step-NNNNNNN` is always complete. It holds the trainable weights, the
AdamW moments, the random-number state and the loop state (step, epoch, position in the data), all
in safetensors and JSON.

On several processes rank 0 writes the folder, with every rank's random state gathered to it
(`rng.safetensors` is rank 0's, `rng-rank-K.safetensors` rank K's): the folder is still written
whole by one process and renamed into place, so it never holds some ranks' files and not others'.
The data position is the same on every rank (each takes its share of the same planned
micro-batches), so it is saved once, in state.json.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tunesmith.errors import RunError
from tunesmith.training import fence
from tunesmith.training.distributed.world import ONE_PROCESS, World

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
    processes: int = 1  # a step's rows are processes x batch_size
    batch_size: int | None = None  # train.batch_size per process (None: a checkpoint from before it was recorded)

    @property
    def rows_per_step(self) -> int | None:
        """Rows of each micro-batch over all processes: a resume is exact only with as many."""
        return None if self.batch_size is None else self.processes * self.batch_size


def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.detach().contiguous() for name, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: TrainState,
                    rng_states: list[dict[str, torch.Tensor]] | None = None) -> Path:
    """Write `folder` atomically; returns it. `rng_states`: every rank's `rng_state()`, rank 0's
    first (by default this process's only)."""
    staging = _staging(folder)
    save_file(trainable_state(model), staging / "trainable.safetensors")
    if optimizer is not None:
        tensors, meta = _flatten_optimizer(optimizer.state_dict())
        save_file(tensors, staging / "optimizer.safetensors")
        _write_json(staging / "optimizer.json", meta)
    _finish(staging, folder, state, rng_states or [rng_state()])
    return folder


def write_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, state: TrainState,
                     world: World = ONE_PROCESS) -> Path:
    """`save_checkpoint` called on every process: every rank's random state goes into it, and a
    model sharded with FSDP is written as shards by every process (torch.distributed.checkpoint)
    into the staging folder that rank 0 then renames into place."""
    rng_states = world.gather(rng_state())
    if not _sharded(model):
        return save_checkpoint(folder, model, optimizer, state, rng_states) if world.is_main else folder
    from tunesmith.training.distributed.fsdp import save_shards

    staging = _staging(folder) if world.is_main else folder.parent / f".partial-{folder.name}"
    world.barrier()  # the staging folder exists before any process writes into it
    save_shards(staging, model, optimizer)  # returns once every process's shards and the index are written
    if world.is_main:
        _finish(staging, folder, state, rng_states)
    return folder


def _staging(folder: Path) -> Path:
    staging = folder.parent / f".partial-{folder.name}"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    return staging


def _finish(staging: Path, folder: Path, state: TrainState, rng_states: list[dict[str, torch.Tensor]]) -> None:
    """The random states and loop state into `staging`, everything flushed, then renamed to `folder`."""
    fence.check()  # a job taken over by another worker: this checkpoint never lands
    for rank, tensors in enumerate(rng_states):
        save_file(tensors, staging / rng_file(rank))
    _write_json(staging / "state.json", asdict(state))
    for file in sorted(staging.rglob("*"), key=lambda path: -len(path.parts)):  # files before their folders
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


def load_checkpoint(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None,
                    rank: int = 0) -> TrainState:
    """Restore weights, optimizer, loop state and rank `rank`'s random state from `folder` (rank
    0's when the checkpoint has none for `rank`: it was written by fewer processes)."""
    if (folder / "sharded").is_dir():
        return _load_sharded(folder, model, optimizer, rank)
    try:
        weights = load_file(folder / "trainable.safetensors")
        optimizer_files = None
        if optimizer is not None and (folder / "optimizer.safetensors").is_file():
            optimizer_files = load_file(folder / "optimizer.safetensors"), json.loads((folder / "optimizer.json").read_text())
        rng = load_file(folder / rng_file(rank if (folder / rng_file(rank)).is_file() else 0))
        state = TrainState(**json.loads((folder / "state.json").read_text()))
    except (OSError, ValueError, TypeError, SafetensorError) as exc:
        raise _unreadable(folder, exc) from None
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


def _load_sharded(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None, rank: int) -> TrainState:
    """A checkpoint of a model sharded with FSDP: every process loads its shards; collective."""
    from tunesmith.training.distributed.fsdp import load_shards

    state = read_train_state(folder)
    try:
        rng = load_file(folder / rng_file(rank if (folder / rng_file(rank)).is_file() else 0))
        load_shards(folder, model, optimizer)
    except (OSError, ValueError, RuntimeError, SafetensorError) as exc:
        raise _unreadable(folder, exc) from None
    _restore_rng(rng)
    return state


def _sharded(model: torch.nn.Module) -> bool:
    if not torch.distributed.is_available() or not torch.distributed.is_initialized():
        return False
    from tunesmith.training.distributed.fsdp import is_sharded

    return is_sharded(model)


def read_train_state(folder: Path) -> TrainState:
    """The loop state of a checkpoint alone (no model needed): what a resume checks first."""
    try:
        return TrainState(**json.loads((folder / "state.json").read_text()))
    except (OSError, ValueError, TypeError) as exc:
        raise _unreadable(folder, exc) from None


def _unreadable(folder: Path, exc: Exception) -> RunError:
    return RunError(f"{folder}: the checkpoint cannot be read ({type(exc).__name__}: {str(exc)[:160]}); move that "
                    "folder away to resume from the one before it, or start a new run")


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


def rng_file(rank: int) -> str:
    return "rng.safetensors" if rank == 0 else f"rng-rank-{rank}.safetensors"


def rng_state() -> dict[str, torch.Tensor]:
    """This process's random generators: torch's CPU one, the CUDA ones it has started, Python's
    `random` (numpy's global one is never used: data order comes from seeded generators of its own)."""
    version, words, gauss = random.getstate()
    tensors = {"torch": torch.get_rng_state(), "python": torch.tensor([version, *words], dtype=torch.int64)}
    if gauss is not None:
        tensors["python.gauss"] = torch.tensor([gauss], dtype=torch.float64)
    if torch.cuda.is_available():  # a CUDA generator's state is a seed and an offset, kept on the host
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{index}"] = state
    return tensors


def _restore_rng(tensors: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors["torch"])
    if "python" in tensors:  # checkpoints from before it was saved have none
        version, *words = tensors["python"].tolist()
        gauss = float(tensors["python.gauss"]) if "python.gauss" in tensors else None
        random.setstate((version, tuple(words), gauss))
    for name, value in tensors.items():
        index = int(name.split(".")[1]) if name.startswith("cuda.") else None
        if index is not None and torch.cuda.is_available() and index < torch.cuda.device_count():
            torch.cuda.set_rng_state(value, index)


def _write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=1))


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
