"""Swapping a module's forward for one of tunesmith's while training, and back: what the fused LoRA
layers (models/fused_lora.py) and RMSNorms (models/fused_norm.py) share. The replacement is an
instance attribute beside a mark, so the class's own forward comes back by removing both."""

from __future__ import annotations

import types
from collections.abc import Callable
from typing import Any


def patch_forward(module: Any, forward: Callable, mark: str) -> bool:
    """`forward(module, ...)` as `module`'s forward, marked `mark`; False where it already is."""
    if hasattr(module, mark):
        return False
    module.forward = types.MethodType(forward, module)
    setattr(module, mark, True)
    return True


def restore_forwards(model: Any, mark: str) -> None:
    """The class's own forward again on every module of `model` that patch_forward marked `mark`
    (one transformers took back already, see models/fused_norm.py, is only unmarked)."""
    for module in model.modules():
        if hasattr(module, mark):
            vars(module).pop("forward", None)
            delattr(module, mark)
