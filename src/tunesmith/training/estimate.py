"""`tunesmith train --estimate`: what a run will cost, from a few measured probe steps on the user's
own rows and hardware, before any real training.

The probe does what the run does, once each: loads the data and the model, takes optimizer steps on
the longest micro-batches of the plan and on a few drawn at random, one validation pass, one
checkpoint, and the final save (the merged model included). Step time is then scaled by the padded
tokens of every planned step (batch widths vary with length grouping), evaluations and checkpoints
by their count. The figure covers the run up to its manifest, as `wall_seconds` in manifest.json
does; the data audit before it and the test-set evaluation after it are not included. Peak memory
is the probe process's own peak (the longest batch, the optimizer state and the save are all in it).
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from tunesmith.config import RunConfig, load_config
from tunesmith.errors import RunError
from tunesmith.models.adapters import adapter_input_casting
from tunesmith.models.device import resolve_device, resolve_precision
from tunesmith.models.load import resolve_model
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.checkpoint import TrainState, save_checkpoint
from tunesmith.training.loop import BatchStream, evaluate, total_steps, train_step
from tunesmith.training.memory import choose_checkpointing
from tunesmith.training.run_folder import RunFolder
from tunesmith.training.session import (
    check_weights_fit,
    get_method,
    load_tokenizer_and_template,
    make_optimizer,
    peak_memory_mb,
    save_outputs,
    trainable_model,
    validation_batches,
)

PROBE_STEPS = 4  # timed steps drawn at random, besides the longest one (which also sets the memory peak)
VALIDATION_PROBES = 4  # validation batches timed


@dataclass(frozen=True)
class Estimate:
    """A run's cost before it runs."""

    steps: int
    """Optimizer steps the run will take."""
    tokens: int
    """Tokens the steps will see (padding excluded)."""
    loss_tokens: int
    """Of those, tokens in the loss."""
    evaluations: int
    """Validation passes."""
    setup_seconds: float
    """Measured: data and model loading."""
    train_seconds: float
    """Estimated: the optimizer steps."""
    eval_seconds: float
    """Estimated: every validation pass."""
    save_seconds: float
    """Measured or estimated: checkpoints and the final save."""
    wall_seconds: float
    """The whole run up to its manifest (manifest.json's wall_seconds)."""
    peak_memory_mb: float
    """Peak memory: GPU memory allocated on a GPU, else the process's resident memory."""
    device: str
    """Where it was measured."""

    def describe(self) -> str:
        return (f"estimate ({self.device}, from {PROBE_STEPS + 1} probe steps): {self.steps} steps, {self.tokens:,} tokens "
                f"({self.loss_tokens:,} in the loss), {self.evaluations} validation passes\n"
                f"  wall time ~{_duration(self.wall_seconds)} (setup {self.setup_seconds:.0f} s, steps "
                f"{self.train_seconds:.0f} s, validation {self.eval_seconds:.0f} s, saving {self.save_seconds:.0f} s; "
                "the test-set evaluation after training is not included)\n"
                f"  peak memory ~{self.peak_memory_mb:,.0f} MB")


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def estimate_run(config: RunConfig) -> Estimate:
    """Probe `config` on this machine (see the module's docstring); nothing is written but a temp folder."""
    started = time.time()
    method = get_method(config.train.method)
    if method.window_source is not None:
        raise RunError(f"--estimate: train.method={method.name} makes its batches while it trains (sampling); "
                       "it cannot be estimated from probe steps")
    source = resolve_model(config.model.name)
    device = resolve_device(config.train.device)
    precision = resolve_precision(config.train.precision, device)
    try:
        check_weights_fit(config, source, device, precision)
    except RunError as error:
        raise RunError(f"--estimate: {error}") from None
    tokenizer, info, _ = load_tokenizer_and_template(method, config, source)
    data = method.prepare_data(config, tokenizer, info)
    model = trainable_model(method, source, config, data, precision, device)
    optimizer = make_optimizer(model, config)
    pad_id = tokenizer.pad_token_id
    stream = BatchStream(data.train, config.train, config.data.max_length, pad_id, method.collate, method.batching)
    steps = total_steps(config.train, stream.steps_per_epoch())
    windows = _planned_windows(stream, steps)
    setup_seconds = time.time() - started

    loss_fn = method.make_loss(config, data)
    memory = choose_checkpointing(model, stream, loss_fn, config.train, device, precision)  # as the run will decide
    if memory is not None:
        print(f"tunesmith: {memory.describe()}", file=sys.stderr)
    validation = validation_batches(data.validation, config, pad_id, method.collate)
    evaluations = _evaluations(config, steps) if validation else 0
    with adapter_input_casting(model, enabled=precision != "bf16"):  # as the run's steps and validations run
        rate = _step_rate(model, optimizer, stream, windows, loss_fn, device, precision, config.train.seed)
        eval_seconds = _validation_seconds(model, validation, loss_fn, device, precision) * evaluations
    train_seconds = rate * sum(_padded(stream, window) for window in windows)

    with tempfile.TemporaryDirectory(prefix="tunesmith-estimate-") as scratch:
        folder = RunFolder(Path(scratch) / "run")
        folder.path.mkdir()
        checkpoint_seconds = _seconds(lambda: save_checkpoint(folder.checkpoints / "probe", model, optimizer, TrainState()))
        final_seconds = _seconds(lambda: save_outputs(model, tokenizer, folder, config, info, source, method, data))
    checkpoints = _saves(config, steps) + (evaluations if validation else 0)  # the best weights are saved when they improve
    save_seconds = checkpoint_seconds * checkpoints + final_seconds
    tokens = sum(len(stream.examples[i]) for _, plans in windows for plan in plans for row in plan for i in row)
    loss_tokens = sum(stream.examples[i].n_loss_tokens for _, plans in windows for plan in plans for row in plan for i in row)
    wall = setup_seconds + train_seconds + eval_seconds + save_seconds
    return Estimate(steps, tokens, loss_tokens, evaluations, round(setup_seconds, 1), round(train_seconds, 1),
                    round(eval_seconds, 1), round(save_seconds, 1), round(wall, 1), round(peak_memory_mb(), 1),
                    f"{device.type}, {precision}")


def _step_rate(model: torch.nn.Module, optimizer: torch.optim.Optimizer, stream: BatchStream, windows: list,
               loss_fn: LossFn, device: torch.device, precision: str, seed: int) -> float:
    """Seconds per padded token of an optimizer step: the median over PROBE_STEPS steps drawn at
    random, after a first, untimed step on the widest one (it pays the one-time costs: allocations,
    kernel choice, and sets the memory peak)."""
    rng = np.random.default_rng(seed)
    widest = max(range(len(windows)), key=lambda i: _padded(stream, windows[i]))
    drawn = rng.choice(len(windows), size=min(PROBE_STEPS, len(windows)), replace=False).tolist()
    rates = []
    model.train()
    for number, index in enumerate([widest, *drawn]):
        epoch, plans = windows[index]
        batches = [stream.collate(stream.examples, plan, stream.pad_id) for plan in plans]
        began = time.perf_counter()
        train_step(model, batches, loss_fn, device, precision, stream.normalizer(epoch))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        _sync(device)
        if number > 0:
            rates.append((time.perf_counter() - began) / _padded(stream, windows[index]))
    return statistics.median(rates) if rates else 0.0


def _seconds(work: Callable[[], object]) -> float:
    began = time.perf_counter()
    work()
    return time.perf_counter() - began


def _validation_seconds(model: torch.nn.Module, batches: list, loss_fn: LossFn, device: torch.device, precision: str) -> float:
    """One validation pass, timed on up to VALIDATION_PROBES of its batches spread over their widths
    and scaled by the padded tokens of all of them."""
    if not batches:
        return 0.0
    sizes = [int(batch.input_ids.numel()) for batch in batches]
    picked = sorted(set(np.linspace(0, len(batches) - 1, min(VALIDATION_PROBES, len(batches))).round().astype(int).tolist()))
    evaluate(model, batches[picked[0]:picked[0] + 1], loss_fn, device, precision)  # warm-up, not timed
    began = time.perf_counter()
    evaluate(model, [batches[i] for i in picked], loss_fn, device, precision)
    _sync(device)
    return (time.perf_counter() - began) * sum(sizes) / sum(sizes[i] for i in picked)


def _planned_windows(stream: BatchStream, steps: int) -> list[tuple[int, list]]:
    """(epoch, micro-batch plans) of every optimizer step the run will take."""
    windows, epoch = [], 0
    accumulation = stream.train.gradient_accumulation
    while len(windows) < steps:
        plans = stream.plans(epoch)
        for start in range(0, len(plans), accumulation):
            windows.append((epoch, plans[start:start + accumulation]))
            if len(windows) == steps:
                break
        epoch += 1
    return windows


def _padded(stream: BatchStream, window: tuple[int, list]) -> int:
    """Tokens a step computes, padding included: each micro-batch is as wide as its longest row."""
    total = 0
    for plan in window[1]:
        widths = [sum(stream.lengths[i] for i in row) for row in plan]
        total += len(plan) * max(widths, default=0)
    return max(total, 1)


def _evaluations(config: RunConfig, steps: int) -> int:
    every = config.train.eval_every
    due = {steps} | (set(range(every, steps + 1, every)) if every > 0 else set())
    return len(due) + int(config.train.eval_before)


def _saves(config: RunConfig, steps: int) -> int:
    every = config.train.save_every
    return len({steps} | (set(range(every, steps + 1, every)) if every > 0 else set()))


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main(argv: list[str]) -> int:
    """`python -m tunesmith.training.estimate CONFIG.yaml`: the estimate as one JSON line (for tune)."""
    estimate = estimate_run(load_config(argv[0]))
    print(json.dumps(asdict(estimate)), flush=True)
    return 0


if __name__ == "__main__":
    from tunesmith.errors import TunesmithError

    try:
        sys.exit(main(sys.argv[1:]))
    except TunesmithError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)


