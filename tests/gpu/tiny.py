"""Building blocks for the CUDA tests: the same LoRA model on the CPU (fp32) and on CUDA (as tunesmith
trains there: bf16 frozen base, fp32 adapters), a right-padded batch, and the step tunesmith runs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

from tunesmith.data.batches import IGNORE_INDEX, Batch

CUDA = torch.device("cuda")
CPU = torch.device("cpu")
needs_cuda = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def lora_model(model_dir: Path, device: torch.device, precision: str, *, like: Any = None) -> Any:
    """The tiny model with LoRA r=8 on every linear layer, built as tunesmith builds it for `precision`
    (models.device.weights_dtype, models.adapters.make_trainable), with random non-zero adapters:
    those of `like` when given, so that two copies hold the same numbers."""
    from transformers import AutoModelForCausalLM

    from tunesmith.config import LoraConfig
    from tunesmith.models.adapters import make_trainable
    from tunesmith.models.attention import use_training_attention
    from tunesmith.models.device import weights_dtype

    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights_dtype(precision, frozen_base=True),
                                                attn_implementation="sdpa")
    model = make_trainable(base, LoraConfig(rank=8, alpha=16, dropout=0.0))
    if like is None:
        generator = torch.Generator().manual_seed(1)
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.data = torch.randn(parameter.shape, generator=generator) * 0.05
    else:
        source = dict(like.named_parameters())
        for name, parameter in model.named_parameters():
            if parameter.requires_grad:
                parameter.data = source[name].detach().to("cpu", torch.float32).clone()
    model.to(device).train()  # as the loop has it (fit); from_pretrained leaves a model in eval mode
    use_training_attention(model, device)  # the CPU's blocked attention; nothing on CUDA
    return model


def padded_batch(lengths: list[int], vocabulary: int, prompt: int = 16, pad_id: int = 2, seed: int = 0) -> Batch:
    """Random token rows of `lengths`, right-padded (no attention mask, as tunesmith's batches), the
    loss on every token after the first `prompt` of each row."""
    generator = torch.Generator().manual_seed(seed)
    width = max(lengths)
    input_ids = torch.full((len(lengths), width), pad_id, dtype=torch.long)
    labels = torch.full((len(lengths), width), IGNORE_INDEX, dtype=torch.long)
    for row, length in enumerate(lengths):
        ids = torch.randint(3, vocabulary, (length,), generator=generator)
        input_ids[row, :length] = ids
        labels[row, prompt:length] = ids[prompt:]
    return Batch(input_ids, labels, None, int((labels[:, 1:] != IGNORE_INDEX).sum()), sum(lengths))


def step_gradients(model: Any, batch: Batch, device: torch.device, precision: str) -> tuple[float, dict[str, torch.Tensor]]:
    """One training step's forward and backward as the loop runs it: (mean loss per loss token,
    the trained weights' gradients on the CPU in fp32)."""
    from tunesmith.models.adapters import adapter_input_casting
    from tunesmith.training.loop import train_step
    from tunesmith.training.loss import causal_lm_loss_sum

    model.zero_grad(set_to_none=True)
    with adapter_input_casting(model, enabled=precision != "bf16"):
        loss_sum, loss_tokens, _, _ = train_step(model, [batch], causal_lm_loss_sum, device, precision)
    grads = {name: p.grad.detach().float().cpu() for name, p in model.named_parameters() if p.grad is not None}
    return loss_sum / loss_tokens, grads


def agreement(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> tuple[float, float]:
    """(cosine similarity, norm ratio b/a) of two sets of gradients, flattened together."""
    assert a.keys() == b.keys() and a
    left = torch.cat([a[k].flatten() for k in sorted(a)]).double()
    right = torch.cat([b[k].flatten() for k in sorted(a)]).double()
    return float(torch.nn.functional.cosine_similarity(left, right, dim=0)), float(right.norm() / left.norm())
