"""Write a trained model as standard Hugging Face folders: PEFT adapter, merged model, tokenizer."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def set_stop_tokens(model: Any, tokenizer: Any, stop_token_ids: tuple[int, ...]) -> None:
    """Generation stops on the token that ends an assistant turn in the template used for training."""
    config = model.generation_config
    config.eos_token_id = list(stop_token_ids) if len(stop_token_ids) > 1 else stop_token_ids[0]
    config.pad_token_id = tokenizer.pad_token_id


def save_adapter(model: Any, tokenizer: Any, folder: Path) -> Path:
    """The LoRA adapter alone (adapter_config.json + adapter_model.safetensors): loads with
    `PeftModel.from_pretrained(base, folder)`."""
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def attach_adapter(base: Any, adapter_dir: Path) -> Any:
    from peft import PeftModel

    return PeftModel.from_pretrained(base, adapter_dir)


def save_model(model: Any, tokenizer: Any, folder: Path, stop_token_ids: tuple[int, ...]) -> Path:
    """A full model folder loadable by plain `AutoModelForCausalLM.from_pretrained`. A peft model
    has its adapter merged into the weights first (this changes `model` in place: call it last)."""
    if hasattr(model, "merge_and_unload"):
        model = model.merge_and_unload()
    if stop_token_ids:
        set_stop_tokens(model, tokenizer, stop_token_ids)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
