"""Tiny classification models for the tests of models/classifier.py and training/classify.py."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

# Mixed lengths, and texts that end in SmolLM2's pad token (<|im_end|>, 2) and in <|endoftext|> (0)
TEXTS = ["good", "a long and rather dull film about nothing much at all, twice over", "fine film<|im_end|>",
         "bad film<|endoftext|>", "ok then", "superb"]


def tiny_llama_config(tokenizer: Any, **overrides: Any) -> Any:
    from transformers import LlamaConfig

    settings = dict(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                    bos_token_id=1, eos_token_id=2, initializer_range=0.2)
    return LlamaConfig(**{**settings, **overrides})


def save_mismatched_pad_model(folder: Path, tokenizer: Any) -> Path:
    """A tiny Llama whose config pad id (0, <|endoftext|>) is not its tokenizer's (2, <|im_end|>), as
    in Llama-3-Instruct and Qwen2.5-Instruct."""
    from transformers import LlamaForCausalLM

    torch.manual_seed(0)
    LlamaForCausalLM(tiny_llama_config(tokenizer, pad_token_id=0)).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    assert tokenizer.pad_token_id == 2
    return folder


@torch.no_grad()
def read_alone(model: Any, ids: list[int]) -> torch.Tensor:
    """transformers' own head on one unpadded row with no pad id to skip: it reads the row's last token."""
    pad_id = model.config.pad_token_id
    model.config.pad_token_id = None
    try:
        return model(input_ids=torch.tensor([ids])).logits[0]
    finally:
        model.config.pad_token_id = pad_id
