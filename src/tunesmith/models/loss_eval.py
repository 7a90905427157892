"""A model's mean loss over batches, without gradients: what validation during training and the
perplexity of an evaluation both measure, with the same loss function the training steps use.

It lives below training and evaluation alike, so that neither imports the other for it; the
training loop adds only what several processes need (each its share of the batches, sums over all).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from tunesmith.data.batches import Batch
from tunesmith.models.device import attention_kernel, autocast

# (model, batch) -> summed loss over its loss tokens, or (that, {metric name: sum over its loss tokens})
LossFn = Callable[[Any, Batch], Any]


def split_loss(output: torch.Tensor | tuple[torch.Tensor, dict[str, float]]) -> tuple[torch.Tensor, dict[str, float]]:
    """A loss function returns its summed loss, or (summed loss, sums of metrics to log with it)."""
    return output if isinstance(output, tuple) else (output, {})


@torch.no_grad()
def loss_sums(model: Any, batches: list[Batch], loss_fn: LossFn, device: torch.device,
              precision: str) -> tuple[float, int, dict[str, float]]:
    """(summed loss, loss tokens, sums of the loss function's metrics) over `batches`, the model in
    eval mode meanwhile. A batch without loss tokens still runs its forward (with FSDP every
    process's forward gathers weights from all of them) and counts for nothing."""
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    metric_sums: dict[str, float] = {}
    for batch in batches:
        with autocast(device, precision), attention_kernel(device, batch.input_ids.shape[1]):
            summed, metrics = split_loss(loss_fn(model, batch.to(device)))
        if not batch.n_loss_tokens:
            continue
        total += summed.item()
        tokens += batch.n_loss_tokens
        for name, value in metrics.items():
            metric_sums[name] = metric_sums.get(name, 0.0) + value
    model.train(was_training)
    return total, tokens, metric_sums


def evaluate_loss(model: Any, batches: list[Batch], loss_fn: LossFn, device: torch.device, precision: str) -> float:
    """Mean loss per loss token over `batches`."""
    total, tokens, _ = loss_sums(model, batches, loss_fn, device, precision)
    return total / max(tokens, 1)
