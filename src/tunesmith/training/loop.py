"""The training loop, shared by the training methods: one `for` loop you can read in one screen.

Each step's micro-batches come from a window source: a BatchStream over the prepared examples, or
(online-dpo) a source that samples, scores and pairs them from the model as it trains; whatever the
source measured while making them goes into the step's record. Validation is a held-out measure
run every `train.eval_every` steps: the loss on held-out batches (its lowest point picks the weights
kept, and can stop the run early), or a measure that only goes into the records (online-dpo's
reward of greedy answers).

Each optimizer step takes `gradient_accumulation` micro-batches, counts their loss tokens first,
and scales every micro-batch's summed loss by that count: the step's gradient is the mean over all
of its loss tokens, whatever the split into micro-batches. With length-grouped batches the count is
the epoch's mean per step instead, so that every token weighs the same whatever the length of the
examples it was batched with (a per-step mean would weigh the tokens of short batches more: measured
0.010 higher held-out loss than random-order batches on the Alpaca benchmark).

On several processes (training/distributed/) the loop is the same loop: each process takes its
share of every micro-batch of the step, the loss tokens are counted over all processes, and rank 0
alone writes records, checkpoints and the progress bar.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

import torch

from tunesmith.config import TrainConfig
from tunesmith.data.batches import Batch, Plan, collate, plan_epoch
from tunesmith.models.device import attention_kernel, autocast
from tunesmith.models.loss_eval import LossFn, loss_sums, split_loss
from tunesmith.training.checkpoint import (
    BEST,
    TrainState,
    prune_checkpoints,
    step_folder,
    write_checkpoint,
)
from tunesmith.training.distributed.ddp import call_wrapped, data_parallel, gradient_sync
from tunesmith.training.distributed.world import ONE_PROCESS, World, without_loss
from tunesmith.training.metrics import MetricsLog, perplexity
from tunesmith.training.schedule import lr_factor, warmup_steps


class BatchStream:
    """Micro-batches in a fixed order per (seed, epoch); the position lives in TrainState.

    On N processes the micro-batches are planned with N x train.batch_size rows, as one process
    with that batch would plan them, and each process collates its share of their rows."""

    def __init__(self, examples: list, train: TrainConfig, max_length: int, pad_id: int,
                 collate_fn: Callable[[list, Plan, int], Any] = collate, batching: str | None = None,
                 world: World = ONE_PROCESS) -> None:
        self.examples = examples
        self.train = train
        self.max_length = max_length
        self.pad_id = pad_id
        self.collate = collate_fn
        self.batching = batching or train.batching
        self.world = world
        self._plans: dict[int, list[Plan]] = {}
        self._step_tokens: dict[int, float] = {}
        self.lengths = [len(e) for e in examples]

    def plans(self, epoch: int) -> list[Plan]:
        if epoch not in self._plans:
            self._plans = {epoch: plan_epoch(self.lengths, self.batching, self.train.batch_size * self.world.size,
                                             self.max_length, self.train.seed, epoch)}
        return self._plans[epoch]

    def normalizer(self, epoch: int) -> float | None:
        """What each step's summed loss is divided by: None (its own loss tokens) unless batches are
        grouped by length, then the mean loss tokens per optimizer step over the epoch."""
        if self.batching != "group_by_length":
            return None
        if epoch not in self._step_tokens:
            total = sum(self.examples[i].n_loss_tokens for plan in self.plans(epoch) for row in plan for i in row)
            self._step_tokens = {epoch: total / math.ceil(len(self.plans(epoch)) / self.train.gradient_accumulation)}
        return self._step_tokens[epoch]

    def steps_per_epoch(self) -> int:
        return math.ceil(len(self.plans(0)) / self.train.gradient_accumulation)

    def epoch_progress(self, state: TrainState) -> float:
        return state.epoch + state.micro_index / max(1, len(self.plans(state.epoch)))

    def next_window(self, state: TrainState) -> tuple[list[Batch], dict[str, float]]:
        """The micro-batches of the next optimizer step (a step never spans two epochs), and no metrics."""
        plans = self.plans(state.epoch)
        if state.micro_index >= len(plans):
            state.epoch, state.micro_index = state.epoch + 1, 0
            plans = self.plans(state.epoch)
        window = plans[state.micro_index:state.micro_index + self.train.gradient_accumulation]
        state.micro_index += len(window)
        return [self.collate_share(plan) for plan in window], {}

    def collate_share(self, plan: Plan) -> Any:
        """This process's rows of a micro-batch (all of them for one process); a process left
        without rows (a last micro-batch with fewer rows than processes) gets a row with no loss."""
        share = self.world.shard(plan)
        if share:
            return self.collate(self.examples, share, self.pad_id)
        return without_loss(self.collate(self.examples, plan[:1], self.pad_id))


class WindowSource(Protocol):
    """Where each optimizer step's micro-batches come from; the position lives in TrainState."""

    def next_window(self, state: TrainState) -> tuple[list[Any], dict[str, float]]: ...  # batches, metrics for the record
    def normalizer(self, epoch: int) -> float | None: ...
    def epoch_progress(self, state: TrainState) -> float: ...
    def steps_per_epoch(self) -> int: ...


class Validation(Protocol):
    """A held-out measure: record entries named val_*. One with `val_loss` picks the weights kept."""

    def __len__(self) -> int: ...  # held-out items; 0: no validation
    def measure(self, model: Any, plan: LoopPlan) -> dict[str, float]: ...


class LossValidation:
    """Mean loss per loss token on held-out batches, and the means of the loss function's metrics."""

    def __init__(self, batches: list[Batch]) -> None:
        self.batches = batches

    def __len__(self) -> int:
        return len(self.batches)

    def measure(self, model: Any, plan: LoopPlan) -> dict[str, float]:
        val_loss, metrics = evaluate(model, self.batches, plan.loss_fn, plan.device, plan.precision, plan.world)
        return {"val_loss": val_loss, "val_ppl": perplexity(val_loss), **{f"val_{name}": value for name, value in metrics.items()}}


def total_steps(train: TrainConfig, steps_per_epoch: int) -> int:
    if train.max_steps is not None:
        return train.max_steps
    return max(1, math.ceil(train.epochs * steps_per_epoch))


def train_step(model: Any, window: list[Batch], loss_fn: LossFn, device: torch.device,
               precision: str, normalizer: float | None = None,
               world: World = ONE_PROCESS) -> tuple[float, int, int, dict[str, float]]:
    """Forward and backward over one optimizer step's micro-batches; returns (loss sum, loss tokens,
    tokens, per-loss-token means of the metrics the loss function reports). The gradient is the
    summed loss divided by `normalizer`, by default the step's own loss tokens.

    On several processes `window` is this process's share of the step and every count and sum is
    over all processes; each backward is scaled by the number of processes, since DDP averages the
    processes' gradients where the step wants their sum. The counts are what the method's batches
    count (loss tokens, pairs, labelled examples), so every method's update is one process's."""
    loss_tokens = world.sum_int(sum(batch.n_loss_tokens for batch in window))
    scale = (normalizer if normalizer is not None else max(loss_tokens, 1)) / world.size
    loss_sum = 0.0
    metric_sums: dict[str, float] = {}
    for number, batch in enumerate(window):
        with gradient_sync(model, last=number == len(window) - 1):
            with autocast(device, precision), attention_kernel(device, batch.input_ids.shape[1]):
                summed, metrics = split_loss(loss_fn(model, batch.to(device)))
            if not batch.n_loss_tokens:  # nothing of it is in the loss (a process's empty share)
                summed, metrics = summed * 0.0, {}
            (summed / scale).backward()
        loss_sum += summed.item()
        for name, value in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
    sums = world.sum_values({**metric_sums, _LOSS: loss_sum, _TOKENS: sum(batch.n_tokens for batch in window)})
    loss_sum, tokens = sums.pop(_LOSS), int(sums.pop(_TOKENS))
    means = {name: value / max(loss_tokens, 1) for name, value in sums.items()}
    return loss_sum, loss_tokens, tokens, means


_LOSS, _TOKENS = " loss", " tokens"  # names no loss function's metric has (its own are identifiers)


def evaluate(model: Any, batches: list[Batch], loss_fn: LossFn, device: torch.device,
             precision: str, world: World = ONE_PROCESS) -> tuple[float, dict[str, float]]:
    """Mean loss per loss token over `batches`, and the means of the loss function's metrics. On
    several processes each evaluates its share of the batches and all get the same sums."""
    # a process's stand-in for a batch it lacks (_share) runs without counting (models/loss_eval.py)
    total, tokens, metric_sums = loss_sums(model, _share(batches, world), loss_fn, device, precision)
    sums = world.sum_values({**metric_sums, _LOSS: total, _TOKENS: tokens})
    total, tokens = sums.pop(_LOSS), int(sums.pop(_TOKENS))
    return total / max(tokens, 1), {name: value / max(tokens, 1) for name, value in sums.items()}


def _share(batches: list[Batch], world: World) -> list[Batch]:
    """This process's validation batches, as many on every process: a process with one fewer runs a
    batch without loss tokens, since with FSDP every forward gathers weights from all processes."""
    mine = batches[world.rank::world.size]
    if world.size > 1 and batches and len(mine) < -(-len(batches) // world.size):
        mine.append(without_loss(batches[0]))
    return mine


@dataclass
class LoopPlan:
    """What the loop needs besides the model and data; derived once from the config."""

    train: TrainConfig
    total_steps: int
    peak_lr: float
    device: torch.device
    precision: str
    checkpoints: Path
    metrics: MetricsLog | None  # None on ranks other than 0
    loss_fn: LossFn
    show_progress: bool = True
    world: World = ONE_PROCESS  # rank 0 alone writes records and checkpoints and shows progress
    sharded: Any = None  # with FSDP (distributed/fsdp.py): the root the steps and the validation go through


def fit(model: Any, optimizer: torch.optim.Optimizer, source: WindowSource, validation: Validation,
        plan: LoopPlan, state: TrainState) -> TrainState:
    """Train from `state` until the step budget is spent or early stopping fires."""
    train = plan.train
    warmup = warmup_steps(plan.total_steps, train.warmup_ratio)
    trainable = [p for p in model.parameters() if p.requires_grad]
    main = plan.world.is_main
    if plan.sharded is not None:  # FSDP: the root gathers the weights it holds in its forward, also to validate
        step_model, step_loss = plan.sharded, call_wrapped
        plan = replace(plan, loss_fn=call_wrapped)
        measured = plan.sharded
    else:
        step_model, step_loss = data_parallel(model, plan.loss_fn, plan.world, plan.device)  # DDP on several processes
        measured = model
    if validation and state.step == 0 and train.eval_before:
        baseline = validation.measure(measured, plan)
        state.baseline_val_loss = baseline.get("val_loss")
        if main:
            plan.metrics.write({"step": 0, **baseline})
    progress = _progress_bar(plan, state) if main else None
    recent_losses: list[float] = []  # training losses since the last evaluation
    model.train()
    while state.step < plan.total_steps and not state.stopped_early:
        lr = plan.peak_lr * lr_factor(state.step, plan.total_steps, warmup, train.scheduler)
        for group in optimizer.param_groups:
            group["lr"] = lr
        started = time.perf_counter()
        window, made = source.next_window(state)  # may sample from the model; may move state into the next epoch
        loss_sum, loss_tokens, tokens, metrics = train_step(step_model, window, step_loss, plan.device, plan.precision,
                                                           source.normalizer(state.epoch), plan.world)
        grad_norm = _clip(trainable, train.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        elapsed = time.perf_counter() - started
        state.step += 1
        state.tokens_seen += tokens
        state.loss_tokens_seen += loss_tokens
        state.train_seconds += elapsed
        record = {"step": state.step, "epoch": round(source.epoch_progress(state), 4), "lr": lr, "grad_norm": grad_norm,
                  "tokens": tokens, "loss_tokens": loss_tokens, "tokens_per_s": tokens / elapsed, **made}
        if loss_tokens:  # an on-policy round can leave nothing to learn from
            record.update({"loss": loss_sum / loss_tokens, **metrics})
            recent_losses.append(record["loss"])
        evaluated = bool(validation) and _due(state.step, train.eval_every, plan.total_steps)
        if evaluated:
            record.update(_evaluate(model, measured, validation, plan, state, recent_losses))
            recent_losses.clear()
            if record.get("overfitting") and main:
                _warn(progress, f"step {state.step}: validation loss rose to {record['val_loss']:.4f} while training loss "
                                "fell: the model may be memorising its training rows (train.early_stopping_patience stops such runs)")
        if main and (state.step % train.log_every == 0 or evaluated or state.step == plan.total_steps):
            plan.metrics.write(record)
        _show(progress, record, state)
        if _due(state.step, train.save_every, plan.total_steps) or state.stopped_early:
            write_checkpoint(step_folder(plan.checkpoints, state.step), model, optimizer, state, plan.world)
            if main:
                prune_checkpoints(plan.checkpoints, train.keep_checkpoints)
    if progress is not None:
        progress.__exit__(None, None, None)
    return state


def _evaluate(model: Any, measured: Any, validation: Validation, plan: LoopPlan, state: TrainState,
              train_losses: list[float]) -> dict[str, Any]:
    """The validation measure (of `measured`: the model, or with FSDP its root); a validation loss
    keeps the best weights, counts evaluations without improvement, and flags validation loss rising
    while training loss falls."""
    record: dict[str, Any] = dict(validation.measure(measured, plan))
    if "val_loss" not in record:  # a measure that is not a loss (online-dpo's reward) only goes into the records
        return record
    val_loss = record["val_loss"]
    if train_losses:  # no step since the last evaluation had a loss token: no training loss to compare with
        train_loss = sum(train_losses) / len(train_losses)
        record["train_val_gap"] = val_loss - train_loss
        previous = state.last_eval
        if previous and val_loss > previous[0] and train_loss < previous[1]:
            record["overfitting"] = True
        state.last_eval = [val_loss, train_loss]
    improved = state.best_val_loss is None or val_loss < state.best_val_loss - plan.train.early_stopping_min_delta
    if improved:
        state.best_val_loss, state.best_step = val_loss, state.step
        state.evals_without_improvement = 0
        write_checkpoint(plan.checkpoints / BEST, model, None, state, plan.world)
    else:
        state.evals_without_improvement += 1
        patience = plan.train.early_stopping_patience
        if patience is not None and state.evals_without_improvement >= patience:
            state.stopped_early = True
    return record


def _warn(progress: Any, message: str) -> None:
    if progress is not None:
        progress.write(f"tunesmith: warning: {message}")
    else:
        print(f"tunesmith: warning: {message}", file=sys.stderr, flush=True)


def _due(step: int, every: int, last: int) -> bool:
    return step == last or (every > 0 and step % every == 0)


def _clip(parameters: list[torch.Tensor], max_norm: float | None) -> float:
    """The gradient norm before clipping; clips to `max_norm` unless it is 0 or None (no clipping:
    clip_grad_norm_ with 0 would scale every gradient to zero)."""
    if not max_norm:
        grads = [p.grad for p in parameters if p.grad is not None]
        return _whole(torch.nn.utils.get_total_norm(grads)) if grads else 0.0
    return _whole(torch.nn.utils.clip_grad_norm_(parameters, max_norm))


def _whole(norm: torch.Tensor) -> float:
    """A norm as a number; with FSDP the norm of sharded gradients is a DTensor to be summed over processes."""
    return float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)


def _progress_bar(plan: LoopPlan, state: TrainState) -> Any:
    if not plan.show_progress:
        return None
    from tunesmith.progress import Stage

    return Stage("training", plan.total_steps, unit="step", initial=state.step).__enter__()


def _show(progress: Any, record: dict[str, Any], state: TrainState) -> None:
    if progress is None:
        return
    rate = state.tokens_seen / state.train_seconds if state.train_seconds else 0.0
    postfix = {"tok/s": f"{rate:.0f}"}
    for key, label in (("loss", "loss"), ("reward_mean", "reward"), ("val_loss", "val"), ("val_reward_mean", "val reward")):
        if key in record:
            postfix[label] = f"{record[key]:.3f}"
    progress.advance(1, **postfix)
