"""Whether a run may resume from its checkpoint here: on as many processes, or on another number
of them when a step keeps its rows and draws no random numbers. Checked before any model loads
(the shape) and once the model is built (its random draws)."""

from __future__ import annotations

from pathlib import Path

import torch

from tunesmith.config import RunConfig
from tunesmith.errors import ConfigError
from tunesmith.training.checkpoint import TrainState, read_train_state
from tunesmith.training.distributed.world import environment_world
from tunesmith.training.run_folder import RunFolder, check_run_folder


def resume_point(config: RunConfig, resume: bool) -> tuple[RunFolder, Path | None, TrainState | None]:
    """The run folder, the checkpoint a resume starts from and the loop state it was saved at, its
    shape checked against this run's processes and batch size before any model loads."""
    run_folder, checkpoint = check_run_folder(config, resume=resume)
    resumed = read_train_state(checkpoint) if checkpoint is not None else None
    if resumed is not None:
        check_resume_shape(run_folder.path, resumed, config.train.batch_size, environment_world().size)
    return run_folder, checkpoint, resumed


def check_resume_shape(run: Path, state: TrainState, batch_size: int, count: int) -> None:
    """A step's micro-batches are planned for processes x train.batch_size rows: a resume is exact
    on another number of processes only when the batch size keeps that product."""
    rows = state.rows_per_step or state.processes * batch_size  # an older checkpoint: the batch size config.yaml kept
    if count * batch_size == rows:
        return
    was = f"{processes(state.processes)} x train.batch_size={rows // state.processes}"
    now = f"{count} x {batch_size}"
    fix = f"resume with --nproc {state.processes} and train.batch_size={rows // state.processes}"
    if rows % count == 0:
        fix += f", or set train.batch_size={rows // count} so that {count} x {rows // count} = {rows}"
    else:
        fix += f" ({rows} rows do not divide among {count} processes)"
    raise ConfigError(f"{run}: this run's steps have {rows} rows a micro-batch ({was}), resuming with {now} would "
                      f"have {count * batch_size}; {fix}")


def check_resume_randomness(run: Path, state: TrainState, model: torch.nn.Module, count: int) -> None:
    """Each process draws its own random numbers (dropout masks) from its own generator, restored
    on resume: a run whose steps draw any can continue exactly only on the same number of processes."""
    if state.processes == count:
        return
    draw = random_draw(model)
    if draw is not None:
        raise ConfigError(f"{run}: this run trained on {processes(state.processes)}, each drawing its own random "
                          f"numbers ({draw}), which {processes(count)} cannot replay; resume with --nproc "
                          f"{state.processes} (a run without dropout resumes on any number whose batch size keeps a "
                          "step's rows)")


def processes(count: int) -> str:
    return f"{count} process" + ("es" if count != 1 else "")


def random_draw(model: torch.nn.Module) -> str | None:
    """Where a training step of `model` draws random numbers (a dropout with p > 0), or None."""
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.modules.dropout._DropoutNd) and module.p > 0:
            return f"dropout p={module.p:g} in {name}"
        if isinstance(getattr(module, "attention_dropout", None), float) and module.attention_dropout > 0:
            return f"attention dropout p={module.attention_dropout:g} in {name}"
    return None
