"""Make a loaded model trainable: LoRA adapters on chosen layers, or every weight."""

from __future__ import annotations

import contextlib
from typing import Any

import torch

from tunesmith.config import LoraConfig
from tunesmith.errors import ConfigError

# peft trains these task heads in full (modules_to_save); its `all-linear` leaves out only the heads of
# causal LMs and sequence classifiers, and a token-classification or QA head it would also wrap in LoRA,
# which its modules_to_save then refuses.
HEADS = {"TOKEN_CLS": ("classifier", "score"), "QUESTION_ANS": ("qa_outputs",)}


def body_linear_layers(model: Any) -> list[str]:
    """Every linear layer but a task head: what `all-linear` means for a tagging or QA model."""
    heads = {name for names in HEADS.values() for name in names}
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and name.rsplit(".", 1)[-1] not in heads]


def make_trainable(model: Any, lora: LoraConfig, *, task_type: str = "CAUSAL_LM", extra_trainable: list[str] | None = None) -> Any:
    """Wrap `model` with LoRA adapters (peft), or unfreeze it for full fine-tuning. Every trained
    weight is fp32, whatever the method and the dtype the frozen base was loaded in."""
    if not lora.enabled:
        for parameter in model.parameters():
            parameter.requires_grad_(True)
        return trained_in_fp32(model)
    from peft import LoraConfig as PeftLoraConfig
    from peft import get_peft_model

    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=body_linear_layers(model) if lora.target_modules == "all-linear" and task_type in HEADS
        else lora.target_modules,
        task_type=task_type,
        modules_to_save=extra_trainable,
    )
    try:
        model = get_peft_model(model, peft_config)
    except ValueError as exc:
        names = sorted({name.rsplit(".", 1)[-1] for name, m in model.named_modules() if isinstance(m, torch.nn.Linear)})
        raise ConfigError(f"lora.target_modules={lora.target_modules!r}: {exc}; this model's linear layers are {', '.join(names)}") from None
    return trained_in_fp32(model)


def trained_in_fp32(model: Any) -> Any:
    """Cast every trainable parameter to fp32 (bf16 keeps 8 bits of mantissa: small AdamW steps round away).
    peft upcasts its adapter layers but not the layers it trains in full (`modules_to_save`, e.g. a
    classification head), which are copies of the bf16 base layers."""
    for parameter in model.parameters():
        if parameter.requires_grad and parameter.dtype in (torch.float16, torch.bfloat16):
            parameter.data = parameter.data.float()
    return model


def adapter_input_casting(model: Any, *, enabled: bool) -> contextlib.AbstractContextManager:
    """peft casts each adapter's input to the adapter's dtype (fp32), and every adapted layer then
    keeps its own fp32 copy of the same input for the backward pass: about 1.2 GB for SmolLM2-135M at
    4 x 512 tokens. Under bf16 autocast the cast is not needed; peft's switch turns it off."""
    if enabled or not hasattr(model, "peft_config"):
        return contextlib.nullcontext()
    from peft.helpers import disable_input_dtype_casting

    return disable_input_dtype_casting(model)


def count_parameters(model: Any) -> tuple[int, int]:
    """(trainable, total) parameter counts, tied weights counted once."""
    seen: set[int] = set()
    trainable = total = 0
    for parameter in model.parameters():
        if id(parameter) in seen:
            continue
        seen.add(id(parameter))
        total += parameter.numel()
        if parameter.requires_grad:
            trainable += parameter.numel()
    return trainable, total
