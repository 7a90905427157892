"""DistributedDataParallel for the one training loop.

The loss functions reach into the model (the decoder, then the output head only at loss
positions) instead of calling its forward, and DDP prepares its gradient averaging in forward(): so
the module DDP wraps is the loss itself, the model with its loss function. The loop then calls
`loss_fn(model, batch)` as ever, with the wrapped module and `call_wrapped` in their place.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from tunesmith.training.distributed.world import World


class LossModule(torch.nn.Module):
    """The model and its loss function as one module whose forward is the summed loss of a batch."""

    def __init__(self, model: torch.nn.Module, loss_fn: Any) -> None:
        super().__init__()
        self.model = model
        self.loss_fn = loss_fn

    def forward(self, batch: Any) -> Any:
        return self.loss_fn(self.model, batch)


def data_parallel(model: Any, loss_fn: Any, world: World, device: torch.device) -> tuple[Any, Any]:
    """(what the loop trains through, its loss function): the model and `loss_fn` themselves for one
    process; a DDP-wrapped LossModule for several. DDP copies rank 0's weights to every process."""
    if world.size == 1:
        return model, loss_fn
    wrapped = DistributedDataParallel(LossModule(model, loss_fn), device_ids=[device.index] if device.type == "cuda" else None,
                                      broadcast_buffers=False)  # no buffer changes in training (no batch norm)
    return wrapped, call_wrapped


def call_wrapped(wrapped: DistributedDataParallel, batch: Any) -> Any:
    return wrapped(batch)


def gradient_sync(model: Any, last: bool) -> contextlib.AbstractContextManager:
    """DDP averages gradients over the processes after every backward unless told not to: only the
    last micro-batch of an optimizer step needs it (the others only accumulate)."""
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP: reduce-scatter after the last micro-batch only
        model.set_requires_gradient_sync(last)
    if last or not isinstance(model, DistributedDataParallel):
        return contextlib.nullcontext()
    return model.no_sync()
