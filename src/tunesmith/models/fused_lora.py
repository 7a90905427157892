"""LoRA layers computed in one pass over their output while training on CPU.

peft's LoRA layer computes `base(x) + lora_B(lora_A(x)) * scaling`: the adapter's product writes a
tensor as large as the layer's output, the scaling reads and writes it again, the sum a third time,
and the backward pass mirrors each (the scaled gradient, the sum of the two input gradients). On a
CPU whose matrix units make the products cheap (AMX: 2.3-2.7 TFLOP/s in bf16 on two cores at
SmolLM2-135M's shapes) those passes over memory cost more than the base product itself. Here the
adapter's product accumulates into the base product (`addmm_`, scaling as its `alpha`), and in the
backward pass the adapter's share of the input gradient accumulates into the base's the same way.
Measured forward + backward on one layer, 2012 rows, bf16, 2 cores with AMX (2026-12-05):
576 -> 1536 11.8 ms with peft, 6.4 ms here; 1536 -> 576 12.4 and 7.5; 576 -> 576 5.0 and 2.8.
The sum is rounded once instead of three times, so it is also a little more exact than peft's.

Only peft's plain LoRA on a `torch.nn.Linear` is computed here: one active adapter, no dropout (the
default), no DoRA or other variant, not merged, a frozen base in the dtype the layer computes in.
Everything else, and any call with extra arguments, runs peft's own forward. Used while `fit` runs
(training/session.py), like the blocked attention; the adapter's parameters are peft's own, so
saving, resuming and merging see nothing different.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.models.device import compute_dtype
from tunesmith.models.patching import patch_forward, restore_forwards

_MARK = "_tunesmith_fused_lora"


class _LoraLinear(torch.autograd.Function):
    """x [M, in], weight [out, in], bias [out] or None, lora_a [r, in], lora_b [out, r] -> [M, out]."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
                lora_a: torch.Tensor, lora_b: torch.Tensor, scaling: float) -> torch.Tensor:
        a, b = lora_a.to(x.dtype), lora_b.to(x.dtype)
        xa = x @ a.t()
        out = torch.addmm(bias, x, weight.t()) if bias is not None else x @ weight.t()
        out.addmm_(xa, b.t(), alpha=scaling)
        ctx.save_for_backward(x, weight, a, b, xa)
        ctx.scaling = scaling
        ctx.dtypes = (lora_a.dtype, lora_b.dtype)
        return out

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight, a, b, xa = ctx.saved_tensors
        if grad.stride(-1) != 1:
            grad = grad.contiguous()
        needs_x, _, _, needs_a, needs_b, _ = ctx.needs_input_grad
        grad_xa = (grad @ b).mul_(ctx.scaling)  # [M, r]: the gradient at the adapter's rank
        grad_b = (grad.t() @ xa).to(ctx.dtypes[1]).mul_(ctx.scaling) if needs_b else None
        grad_a = (grad_xa.t() @ x).to(ctx.dtypes[0]) if needs_a else None
        grad_x = None
        if needs_x:
            grad_x = grad @ weight
            grad_x.addmm_(grad_xa, a)
        return grad_x, None, None, grad_a, grad_b, None


def _adapter(layer: Any, x: torch.Tensor) -> str | None:
    """The one adapter this call can compute fused, or None where peft's forward must run."""
    active = layer.active_adapters
    if layer.disable_adapters or layer.merged or len(active) != 1:
        return None
    name = active[0]
    base = layer.base_layer
    if name not in layer.lora_A or name in getattr(layer, "lora_variant", {}) \
            or not isinstance(layer.lora_dropout[name], torch.nn.Identity):
        return None
    if base.weight.requires_grad or (base.bias is not None and base.bias.requires_grad):
        return None
    return name if base.weight.dtype == compute_dtype(x) else None


def _fused_forward(layer: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    name = None if args or kwargs else _adapter(layer, x)
    if name is None:
        return type(layer).forward(layer, x, *args, **kwargs)
    base = layer.base_layer
    flat = x.reshape(-1, x.shape[-1]).to(base.weight.dtype)
    with torch.autocast(x.device.type, enabled=False):  # the products run in the base's dtype, as autocast would
        out = _LoraLinear.apply(flat, base.weight, base.bias, layer.lora_A[name].weight, layer.lora_B[name].weight,
                                float(layer.scaling[name]))
    return out.view(*x.shape[:-1], out.shape[-1])


def use_fused_lora(model: Any, device: torch.device) -> int:
    """On CPU, every plain peft LoRA linear layer of `model` computes fused (returns how many)."""
    if device.type != "cpu":
        return 0
    try:
        from peft.tuners.lora.layer import Linear
    except ImportError:  # no peft, no LoRA layers
        return 0
    return sum(patch_forward(module, _fused_forward, _MARK) for module in model.modules()
               if type(module) is Linear and isinstance(module.base_layer, torch.nn.Linear))


def leave_fused_lora(model: Any) -> None:
    """peft's own forward again on every layer use_fused_lora changed."""
    restore_forwards(model, _MARK)
