"""RMSNorm in fewer passes over memory while training on CPU, with a frozen scale (LoRA).

transformers' RMSNorm (Llama's, and Qwen2's and Mistral's, which are copies of it) makes an fp32 copy
of its input, squares it into a second one, scales it into a third, rounds it back and multiplies by
the weight; autograd keeps the fp32 copy for the backward pass (4 bytes a value, 61 of them a step
in SmolLM2-135M) and walks back through each operation. Here the squares are summed straight from
the input (`vector_norm` accumulates in fp32), only the bf16 input and one fp32 scale a row are
kept, and the backward pass is the closed form of the same computation:

    r = rsqrt(mean(x^2) + eps),  y = w * bf16(x r),  dx = r g' - x r^3 mean(g' x),  g' = fp32(w * g)

with every rounding where transformers' version has it, so outputs are the same and the input
gradient equals it to fp32 rounding (tests/unit/models/test_fused_norm.py). Only modules whose
`forward` is exactly Llama's (the same bytecode) are changed, and only while their weight is frozen.
"""

from __future__ import annotations

from typing import Any

import torch

from tunesmith.models.patching import patch_forward, restore_forwards

_MARK = "_tunesmith_fused_norm"


class _RMSNorm(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=-1, keepdim=True, dtype=torch.float32)
        scale = norm.square_().div_(x.shape[-1]).add_(eps).rsqrt_()
        ctx.save_for_backward(x, weight, scale)
        return weight * (x * scale).to(x.dtype)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:
        x, weight, scale = ctx.saved_tensors
        scaled = (grad * weight).float()
        mean = (scaled * x).sum(-1, keepdim=True).mul_(scale.pow(3)).div_(-x.shape[-1])
        return scaled.mul_(scale).addcmul_(x, mean).to(x.dtype), None, None


def _fused_forward(norm: Any, hidden_states: torch.Tensor) -> torch.Tensor:
    if norm.weight.requires_grad:  # a trained scale: transformers' own forward
        return type(norm).forward(norm, hidden_states)
    return _RMSNorm.apply(hidden_states, norm.weight, float(norm.variance_epsilon))


def _is_llamas(module: Any) -> bool:
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    forward = getattr(type(module), "forward", None)
    code, llama = getattr(forward, "__code__", None), LlamaRMSNorm.forward.__code__
    return (code is not None and code.co_code == llama.co_code and code.co_names == llama.co_names
            and code.co_consts == llama.co_consts and hasattr(module, "variance_epsilon"))


def use_fused_norms(model: Any, device: torch.device) -> int:
    """On CPU, every RMSNorm of `model` computed as Llama's is, in fewer passes (returns how many)."""
    if device.type != "cpu":
        return 0
    _without_hub_kernels(model)
    return sum(patch_forward(module, _fused_forward, _MARK) for module in model.modules() if _is_llamas(module))


def _without_hub_kernels(model: Any) -> None:
    """Where the `kernels` package is installed, transformers (5.x) loads every model with
    `use_kernels=True` and kernelizes it again at each switch between train() and eval(), which puts
    back the class's forward of each hub-kernel layer (RMSNorm is one): the fused norms would be gone
    after the first evaluation. On CPU no hub kernel applies; switching them off keeps the model's own
    layers, and ours."""
    for module in model.modules():
        if getattr(module, "_use_kernels", False):
            module.use_kernels = False  # transformers' reset: the torch implementations, no re-kernelizing


def leave_fused_norms(model: Any) -> None:
    """transformers' own forward again on every norm use_fused_norms changed."""
    restore_forwards(model, _MARK)
