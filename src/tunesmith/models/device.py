"""Where a model runs and in which precision.

bf16 is used where the hardware computes it natively: on CUDA GPUs that support it, and on CPUs with
bf16 instructions (x86 AVX512-BF16 or AMX, Arm BF16). There it is about twice as fast as fp32 for
matrix products and halves activation memory; elsewhere it would be emulated and slower, so fp32.
"""

from __future__ import annotations

import contextlib
import functools
import platform
import subprocess
from pathlib import Path
from typing import Any

import torch

from tunesmith.errors import ConfigError


def resolve_device(setting: str) -> torch.device:
    if setting == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(setting)
    except (RuntimeError, TypeError):
        raise ConfigError(f"train.device={setting!r} is not a device; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"train.device={setting}: no CUDA device on this machine; use cpu or auto")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ConfigError(f"train.device={setting}: this machine has {torch.cuda.device_count()} CUDA devices "
                          f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    if device.type in ("mps", "xpu") and not getattr(torch, device.type).is_available():
        raise ConfigError(f"train.device={setting}: no {device.type} device on this machine; use cpu or auto")
    return device


def resolve_precision(setting: str, device: torch.device) -> str:
    """fp32 or bf16; `auto` is bf16 where the device computes it natively."""
    if setting != "auto":
        return setting
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if cpu_has_native_bf16() else "fp32"


@functools.cache
def cpu_has_native_bf16() -> bool:
    machine = platform.machine().lower()
    if machine in ("x86_64", "amd64") and torch.backends.cpu.get_cpu_capability() in ("DEFAULT", "AVX2"):
        return False  # PyTorch runs its AVX2 kernels (ATEN_CPU_CAPABILITY=avx2): bf16 is emulated, whatever the CPU has
    if platform.system() == "Linux":
        try:
            flags = Path("/proc/cpuinfo").read_text()
        except OSError:
            return False
        return any(flag in flags.split() for flag in ("avx512_bf16", "amx_bf16", "bf16"))
    if platform.system() == "Darwin" and machine == "arm64":
        result = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True)
        return result.stdout.strip() == "1"
    return False


# On CPU, PyTorch's flash kernel for scaled-dot-product attention has a fixed cost per head and block
# that dominates short sequences, where its plain "math" kernel is faster. Measured on SmolLM2-135M
# training steps (LoRA, bf16, 4 rows): math +11% at 80 tokens, +7% at 160; flash +15% at 320, +52% at 512.
_CPU_MATH_ATTENTION_UP_TO = 256


def attention_kernel(device: torch.device, width: int) -> contextlib.AbstractContextManager:
    """The faster SDPA kernel for a batch `width` tokens wide (CPU only; GPUs keep PyTorch's choice)."""
    if device.type != "cpu" or width > _CPU_MATH_ATTENTION_UP_TO:
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel(SDPBackend.MATH)


def compute_dtype(tensor: torch.Tensor) -> torch.dtype:
    """The dtype products with `tensor` run in: autocast's where it is on for its device, else its own."""
    kind = tensor.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else tensor.dtype


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16 autocast on `device` under train.precision=bf16; fp32 runs as the weights are."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_checkpointing(model: Any) -> None:
    """Activation checkpointing (PyTorch's non-reentrant kind) on every transformer layer. A layer's
    recomputation in the backward pass runs under the attention kernel its forward ran under: the
    kernel is chosen per batch width (attention_kernel), and a recomputation under another kernel
    saves other tensors, which PyTorch refuses ("Recomputed values ... have different metadata")."""
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False,
                                                                       "context_fn": _same_attention_kernel})


def _same_attention_kernel() -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
    from torch.nn.attention import SDPBackend, sdpa_kernel

    flags = torch.backends.cuda  # the kernel switches PyTorch keeps, for CPU as for CUDA
    enabled = [backend for backend, on in ((SDPBackend.FLASH_ATTENTION, flags.flash_sdp_enabled()),
                                           (SDPBackend.EFFICIENT_ATTENTION, flags.mem_efficient_sdp_enabled()),
                                           (SDPBackend.CUDNN_ATTENTION, flags.cudnn_sdp_enabled()),
                                           (SDPBackend.MATH, flags.math_sdp_enabled())) if on]
    return contextlib.nullcontext(), sdpa_kernel(enabled)


def weights_dtype(precision: str, frozen_base: bool) -> torch.dtype:
    """bf16 for frozen base weights under bf16 (LoRA); trained weights stay fp32 (AdamW masters)."""
    return torch.bfloat16 if precision == "bf16" and frozen_base else torch.float32


def contiguous_output_head(model: Any) -> Any:
    """Hand the output head a contiguous input. transformers' generate asks for the last position's
    logits only (logits_to_keep=1), a strided slice of the hidden states, and PyTorch's CPU matmul
    takes a slow path for a strided bf16 input: Qwen2.5-0.5B's 151,936-word head on 8 rows took 22 s
    sliced and 0.12 s contiguous (torch 2.13, one thread), so the prefill of every sampled or
    evaluated batch spent ~90% of its time there. The copy is one row per sequence."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if isinstance(head, torch.nn.Module) and not getattr(head, "_tunesmith_contiguous", False):
        head.register_forward_pre_hook(_contiguous_input)
        head._tunesmith_contiguous = True
    return model


def _contiguous_input(module: Any, args: tuple) -> tuple | None:
    if args and isinstance(args[0], torch.Tensor) and not args[0].is_contiguous():
        return (args[0].contiguous(), *args[1:])
    return None

