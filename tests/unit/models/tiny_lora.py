"""The tiny Llama with LoRA on every linear layer, trained adapters (B not zero), and the gradients
of its loss on one fixed batch: what the fused-layer tests compare with and without the fused path."""

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def tiny_lora_model(model_dir: Path, *, checkpointing: bool = False):
    from tunesmith.config import build_config
    from tunesmith.models.adapters import make_trainable
    from tunesmith.models.device import enable_checkpointing

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    if checkpointing:
        enable_checkpointing(model)
    model = make_trainable(model, build_config({"lora": {"rank": 4}}).lora)
    for name, parameter in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(parameter, std=0.1)
    model.train()
    return model


def lora_gradients(model) -> dict[str, torch.Tensor]:
    """Every parameter's gradient of the loss on one fixed batch of 2 rows of 12 tokens."""
    ids = torch.randint(3, 500, (2, 12), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    return {name: p.grad for name, p in model.named_parameters() if p.grad is not None}
