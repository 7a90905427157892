"""`train.gradient_checkpointing: auto`: switch activation checkpointing on when a run would not fit.

The peak of a training step is the memory already held (weights, adapters, data) plus what
autograd keeps for the backward pass, which grows with the tokens of a micro-batch, plus the
optimizer's state and a backward pass's working set. What autograd keeps is measured, not guessed:
one forward pass over a short real example, with a saved-tensors hook that adds up every tensor
the backward will need (each storage once, the model's own weights excluded), attributed to the
transformer layer that saved it. Scaled to the longest micro-batch, that gives the peak without
checkpointing; with it, each layer keeps only its input and one layer at a time is recomputed.
A formula per architecture would drift from what transformers' code really saves; this follows it.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.allocator import INSTALL_HINT, current_allocator
from tunesmith.data.batches import IGNORE_INDEX, Batch
from tunesmith.models.adapters import adapter_input_casting
from tunesmith.models.device import autocast, enable_checkpointing
from tunesmith.models.loss_eval import LossFn, split_loss

# Switch on when the projection passes 75% of the memory available. The projection counts what
# autograd keeps; the peak RSS measured by benchmarks/memory_by_size.py (2026-12-01, glibc's malloc)
# was 4-17% above it without checkpointing (SmolLM2-135M to a 3B Qwen2.5, batch 1) and 35% above it
# with checkpointing (3B, 4 x 1024 tokens). Under tcmalloc (allocator.py) the peak is the projection:
# 6.26 GB against 6.2 projected (SmolLM2-135M, fp32, 4 x 1024 tokens), where glibc's took 10.9.
_HEADROOM = 0.75
_GB = 1e9


@dataclass(frozen=True)
class SavedActivations:
    """Bytes autograd keeps for the backward pass, per token of a micro-batch (padding included)."""

    per_layer: tuple[float, ...]  # each transformer layer's
    outside: float  # the embeddings, the final norm and the loss
    layer_input: float  # one layer's input: what each layer keeps under checkpointing

    def peak(self, tokens: int, checkpointing: bool) -> float:
        """Activation bytes at the peak of a step of `tokens` tokens. The backward pass works on one
        layer at a time, with about that layer's saved size in gradients on top."""
        largest = max(self.per_layer, default=0.0)
        if checkpointing:  # inputs kept, one layer recomputed, its gradients
            kept = len(self.per_layer) * self.layer_input + 2 * largest
        else:
            kept = sum(self.per_layer) + largest
        return tokens * (kept + self.outside)


@dataclass(frozen=True)
class MemoryPlan:
    """gradient_checkpointing=auto's decision and the figures it rests on."""

    checkpointing: bool
    held: float  # bytes held before the first step
    projected_off: float  # peak bytes without checkpointing
    projected_on: float  # peak bytes with it
    available: float  # bytes the run may use
    allocator: str = ""  # on a CPU: "tcmalloc" or "system" (allocator.py); "" on a GPU
    four_bit_on: float | None = None  # peak bytes with checkpointing and the base in 4 bits; None: already is

    def describe(self) -> str:
        figures = (f"projected peak {self.projected_off / _GB:.1f} GB without activation checkpointing, "
                   f"{self.projected_on / _GB:.1f} GB with it; {self.available / _GB:.1f} GB available")
        if not self.checkpointing:
            line = f"memory: {figures}; checkpointing off (train.gradient_checkpointing=auto)"
        else:
            line = f"memory: activation checkpointing on (train.gradient_checkpointing=auto): {figures}"
            if self.projected_on > _HEADROOM * self.available:
                line += "; even so the run may not fit: " + self._what_fits()
        if self.allocator == "system":
            line += (f"; glibc's malloc can hold much more than this at the peak (1.7-3.3x at 4 x 1024 tokens): "
                     f"{INSTALL_HINT} and run the tunesmith command, which then uses tcmalloc")
        return line

    def _what_fits(self) -> str:
        """The ways out of a run that does not fit even with checkpointing. The 4-bit base is named, not
        taken: checkpointing recomputes the same numbers, 4 bits change them (each base weight rounded to
        one of 16 levels of its block), which a user must choose, as they choose a smaller model."""
        shorter = ("lower train.batch_size (raise train.gradient_accumulation to keep the step) or "
                   "data.max_length")
        if self.four_bit_on is None:
            return shorter
        fits = "fits" if self.four_bit_on <= _HEADROOM * self.available else "still does not fit"
        return (f"with the base weights in 4 bits the projection is {self.four_bit_on / _GB:.1f} GB, which {fits}: "
                f"set model.quantization=4bit and output.save_merged=false (QLoRA; it changes the base's numbers, "
                f"so it is not switched on for you), or {shorter}")


# NF4 as models/load.py stores it: a 4-bit code a weight, a uint8 scale a block of 64 weights, and an
# fp32 scale for every 256 of those (bitsandbytes' nested quantization; checked by tests/integration/test_quantize.py)
NF4_BYTES_PER_WEIGHT = 0.5 + 1 / 64 + 4 / (64 * 256)


def four_bit_saving(model: Any) -> float:
    """Bytes a 4-bit base would save: the frozen weights of the linear layers that models/load.py's
    4 bits would hold in NF4 (every one but the output head), less their NF4 size. 0 when the base
    is in 4 bits already, is not a causal LM, or has no frozen linear layers (full fine-tuning)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if getattr(base, "is_loaded_in_4bit", False):
        return 0.0
    head = base.get_output_embeddings() if hasattr(base, "get_output_embeddings") else None
    if head is None:  # not a causal LM: model.quantization is for those alone
        return 0.0
    saving = 0.0
    for module in base.modules():
        weight = getattr(module, "weight", None)
        if (isinstance(module, torch.nn.Linear) and module is not head and weight is not None
                and not weight.requires_grad and weight.is_floating_point()):
            saving += weight.numel() * (weight.element_size() - NF4_BYTES_PER_WEIGHT)
    return max(saving, 0.0)


def base_weight_bytes(folder: str, dtype: torch.dtype) -> tuple[float, float] | None:
    """The base weights' bytes in `dtype` and with its linear layers in 4 bits, read from the
    safetensors headers of a local model folder (no weights loaded); None where there are none.
    Embeddings and the output head (the 2-D tensors as tall as the vocabulary) stay in `dtype`."""
    import json
    from pathlib import Path

    from safetensors import safe_open

    files = sorted(Path(folder).glob("*.safetensors"))
    config = Path(folder) / "config.json"
    if not files or not config.is_file():
        return None
    try:
        settings = json.loads(config.read_text())
        vocabulary = settings.get("vocab_size") or settings.get("text_config", {}).get("vocab_size")
        size = torch.empty((), dtype=dtype).element_size()
        whole = four_bit = 0.0
        for file in files:
            with safe_open(str(file), framework="pt") as weights:
                for name in weights.keys():
                    shape = weights.get_slice(name).get_shape()
                    count = float(torch.Size(shape).numel())
                    whole += count * size
                    linear = len(shape) == 2 and name.endswith(".weight") and shape[0] != vocabulary
                    four_bit += count * (NF4_BYTES_PER_WEIGHT if linear else size)
    except Exception:  # noqa: BLE001 - a broken folder is the loader's to report, with its own message
        return None
    return whole, four_bit


def weights_fit(folder: str, dtype: torch.dtype, quantization: str, device: torch.device,
                limit_gb: float | None) -> str | None:
    """Before the model is loaded: None, or why its frozen weights alone pass the memory the run may
    use (what gradient_checkpointing=auto allows itself, 75%), with the 4-bit alternative's figure."""
    sizes = base_weight_bytes(folder, dtype)
    if sizes is None:
        return None
    whole, four_bit = sizes
    weights = four_bit if quantization == "4bit" else whole
    available = limit_gb * _GB if limit_gb is not None else _own_bytes(device) + _free_bytes(device)
    if weights <= _HEADROOM * available:
        return None
    held = "in 4 bits" if quantization == "4bit" else f"in {str(dtype).removeprefix('torch.')}"
    line = (f"the base model's weights {held} take {weights / _GB:.1f} GB, more than the run can use of "
            f"{available / _GB:.1f} GB available (75%, before activations and adapters)")
    if quantization != "4bit":
        fits = "which fits" if four_bit <= _HEADROOM * available else "still too much"
        line += (f"; in 4 bits they take {four_bit / _GB:.1f} GB ({fits}): model.quantization=4bit with "
                 "output.save_merged=false (QLoRA)")
    return line + "; or a smaller model, or a machine with more memory"


def measure_saved_activations(model: Any, loss_fn: LossFn, batch: Any, device: torch.device, precision: str) -> SavedActivations:
    """What one forward pass over `batch` keeps for the backward, per token, by layer. The random
    state is restored afterwards (dropout draws in the probe must not shift the run's own)."""
    from transformers.modeling_layers import (
        GradientCheckpointingLayer,  # the base of every transformer block
    )

    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    layers = [m for m in model.modules() if isinstance(m, GradientCheckpointingLayer)]
    sizes = [0] * len(layers)
    outside = [0]
    layer_input = [0]
    seen: set[int] = set()
    current: list[int | None] = [None]

    def pack(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        pointer = storage.data_ptr()
        if pointer not in weights and pointer not in seen:
            seen.add(pointer)
            if current[0] is None:
                outside[0] += storage.nbytes()
            else:
                sizes[current[0]] += storage.nbytes()
        return tensor

    def enter(index: int) -> Any:
        def hook(module: Any, args: tuple, kwargs: dict) -> None:
            current[0] = index
            hidden = args[0] if args else kwargs.get("hidden_states")
            if index == 0 and isinstance(hidden, torch.Tensor):
                layer_input[0] = hidden.numel() * hidden.element_size()
        return hook

    def leave(module: Any, args: tuple, output: Any) -> None:
        current[0] = None

    handles = [layer.register_forward_pre_hook(enter(i), with_kwargs=True) for i, layer in enumerate(layers)]
    handles += [layer.register_forward_hook(leave) for layer in layers]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor), autocast(device, precision):
                loss, _ = split_loss(loss_fn(model, batch.to(device)))
            del loss
    finally:
        for handle in handles:
            handle.remove()
    tokens = batch.input_ids.numel()
    return SavedActivations(tuple(size / tokens for size in sizes), outside[0] / tokens, layer_input[0] / tokens)


def plan_memory(saved: SavedActivations, tokens: int, trainable: int, device: torch.device,
                limit_gb: float | None, held: float | None = None, four_bit_saving: float = 0.0) -> MemoryPlan:
    """Whether the longest micro-batch (`tokens` tokens, padding included) needs checkpointing to fit.
    Trainable parameters (fp32) add their gradient and AdamW's two moments, 12 bytes each. `held`:
    the memory in use (default: now); `four_bit_saving`: what a 4-bit base would hold less (four_bit_saving())."""
    held = _held_bytes(device) if held is None else held
    fixed = held + 12 * trainable
    off, on = fixed + saved.peak(tokens, False), fixed + saved.peak(tokens, True)
    available = limit_gb * _GB if limit_gb is not None else _own_bytes(device) + _free_bytes(device)
    allocator = current_allocator() if device.type == "cpu" and sys.platform == "linux" else ""
    return MemoryPlan(off > _HEADROOM * available, held, off, on, available, allocator,
                      on - four_bit_saving if four_bit_saving > 0 else None)


def _shortened(batch: Any, tokens: int) -> Any:
    """A token batch cut to its last `tokens` positions (the reply's, which the loss sees): the probe
    costs a few tokens' work however long the rows are. Other batches are probed whole."""
    if not isinstance(batch, Batch) or batch.input_ids.shape[1] <= 2 * tokens:
        return batch
    labels = batch.labels[:, -tokens:]
    positions = None if batch.position_ids is None else batch.position_ids[:, -tokens:]
    return Batch(batch.input_ids[:, -tokens:], labels, positions, int((labels[:, 1:] != IGNORE_INDEX).sum()),
                 labels.numel())


def _held_bytes(device: torch.device) -> float:
    """Memory in use now: what the GPU holds, or this process's resident pages (its own and those of
    the files it maps, such as the weights' safetensors; ru_maxrss would be the peak so far)."""
    if device.type == "cuda":
        return float(torch.cuda.memory_allocated(device))
    with open("/proc/self/statm") as handle:
        return float(int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE"))


def _own_bytes(device: torch.device) -> float:
    """The part of the memory in use that the machine's free memory does not already count: on a
    CPU, anonymous pages only (the file pages of mapped weights are page cache, which MemAvailable
    includes)."""
    if device.type == "cuda":
        return float(torch.cuda.memory_allocated(device))
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("RssAnon:"):
                return float(line.split()[1]) * 1024
    return _held_bytes(device)


def _free_bytes(device: torch.device) -> float:
    """Memory this process can still take: the GPU's free memory, or the machine's available RAM
    (within a cgroup's limit), shared with the other processes of this machine's ranks."""
    sharing = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return free / sharing
    free = _meminfo_available()
    cgroup = _cgroup_room()
    if cgroup is not None:
        free = min(free, cgroup)
    return free / sharing


def _meminfo_available() -> float:
    with open("/proc/meminfo") as handle:
        for line in handle:
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024
    return float("inf")


def _cgroup_room() -> float | None:
    """What a cgroup v2 memory limit leaves, or None without one."""
    try:
        with open("/sys/fs/cgroup/memory.max") as handle:
            limit = handle.read().strip()
        if limit == "max":
            return None
        with open("/sys/fs/cgroup/memory.current") as handle:
            return float(int(limit) - int(handle.read().strip()))
    except (OSError, ValueError):
        return None


def choose_checkpointing(model: Any, stream: Any, loss_fn: LossFn, train: Any, device: torch.device,
                         precision: str) -> MemoryPlan | None:
    """For train.gradient_checkpointing=auto over a BatchStream: measure, project, and switch
    checkpointing on where the longest micro-batch would not fit. None when nothing was decided
    (checkpointing set explicitly, or no layers to checkpoint)."""
    if train.gradient_checkpointing != "auto" or not stream.examples:
        return None
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not getattr(base, "supports_gradient_checkpointing", False):
        return None
    held = _held_bytes(device)  # before the probe, whose own memory the allocator may keep
    probe = min(range(len(stream.examples)), key=lambda i: abs(stream.lengths[i] - _PROBE_TOKENS))
    batch = _shortened(stream.collate(stream.examples, [[probe]], stream.pad_id), _PROBE_TOKENS)
    with adapter_input_casting(model, enabled=precision != "bf16"):  # as the training steps run
        saved = measure_saved_activations(model, loss_fn, batch, device, precision)
    widest = max(stream.plans(0), key=lambda plan: len(plan) * max(sum(stream.lengths[i] for i in row) for row in plan))
    tokens = stream.collate_share(widest).input_ids.numel()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    plan = plan_memory(saved, tokens, trainable, device, train.memory_limit_gb, held, four_bit_saving(model))
    if plan.checkpointing:
        enable_checkpointing(base)
    return plan


_PROBE_TOKENS = 64  # short enough to cost little on a big model, long enough for per-token sizes
