"""Fully sharded data parallelism (PyTorch's FSDP2, `fully_shard`) for full fine-tuning.

Each process keeps 1/N of every weight, gradient and AdamW moment. Each decoder layer is its own
unit (gathered for its forward and backward, then freed); the root unit holds the rest: the
embeddings, the final norm and the output head. As with DDP (ddp.py), the root is the model with
its loss function, since the loss functions call the decoder and the head themselves rather than
the model's forward, and FSDP gathers a unit's weights in that unit's forward.

Mixed precision matches the single-device path: under bf16 the gathered weights and the compute
are bf16 (the loop's autocast stays on), the sharded fp32 weights are AdamW's masters, and
gradients are reduced in fp32. Checkpoints are sharded with torch.distributed.checkpoint: every
process writes its own shards into the staging folder, then rank 0 renames it into place.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_model_state_dict,
    get_state_dict,
    set_model_state_dict,
    set_state_dict,
)
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

from tunesmith.training.distributed.ddp import LossModule

SHARDS = "sharded"  # the checkpoint's subfolder written by torch.distributed.checkpoint


def shard(model: torch.nn.Module, loss_fn: Any, precision: str) -> LossModule:
    """Shard `model` in place (decoder layers, then the rest); returns the root to train through.
    Build the optimizer after this, over the model's (now sharded) parameters."""
    from transformers.modeling_layers import (
        GradientCheckpointingLayer,  # the base of every transformer block
    )

    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if precision == "bf16" \
        else MixedPrecisionPolicy()
    for layer in [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]:
        fully_shard(layer, mp_policy=policy)
    root = LossModule(model, loss_fn)
    fully_shard(root, mp_policy=policy)
    return root


def is_sharded(model: Any) -> bool:
    return isinstance(model, FSDPModule) or any(isinstance(m, FSDPModule) for m in model.modules())


def save_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Every process writes its shards of the weights (and the optimizer) under `folder`; collective."""
    import torch.distributed.checkpoint as dcp

    if optimizer is None:
        state = {"model": get_model_state_dict(model)}
    else:
        weights, moments = get_state_dict(model, optimizer)
        state = {"model": weights, "optimizer": moments}
    dcp.save(state, checkpoint_id=folder / SHARDS)


def load_shards(folder: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer | None) -> None:
    """Each process reads its shards back (the number of processes may differ from the writer's,
    down to one process without a process group); collective."""
    import torch.distributed.checkpoint as dcp

    alone = not torch.distributed.is_initialized()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "torch.distributed is disabled", UserWarning)  # one process: meant so
        if optimizer is None:
            weights = get_model_state_dict(model)
            dcp.load({"model": weights}, checkpoint_id=folder / SHARDS, no_dist=alone)
            set_model_state_dict(model, weights)
            return
        weights, moments = get_state_dict(model, optimizer)  # a fresh optimizer's moments are made (zero) to load into
        state = {"model": weights, "optimizer": moments}
        dcp.load(state, checkpoint_id=folder / SHARDS, no_dist=alone)
    set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])


def full_weights(model: torch.nn.Module, main: bool) -> dict[str, torch.Tensor] | None:
    """The whole model's weights on rank 0's CPU (None on the others); collective."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    return state if main else None
