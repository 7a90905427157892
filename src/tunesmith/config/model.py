"""model: which pre-trained model a run starts from, and how it is loaded."""

from __future__ import annotations

from typing import Literal

from tunesmith.config.base import Section, setting

DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelConfig(Section):
    """Which pre-trained model to start from and how to load it."""

    name: str = setting(
        DEFAULT_MODEL,
        "Base model: a catalog name (`tunesmith models`), a local Hugging Face folder, a .gguf file, "
        "or a hub id such as `HuggingFaceTB/SmolLM2-135M-Instruct` (needs the internet).",
    )
    revision: str | None = setting(None, "Hub revision (branch, tag or commit) for hub ids.")
    trust_remote_code: bool = setting(
        False, "Run Python code shipped with a hub model. Off unless you trust its author."
    )
    chat_template: str | None = setting(
        None,
        "Chat template to use instead of the model's: a path to a .jinja file or the template text. "
        "A model without one gets tunesmith's documented default (see docs/templates.md).",
    )
    attn_implementation: str = setting(
        "sdpa", "Attention kernel: sdpa (PyTorch scaled-dot-product), eager, or flash_attention_2. On CPU, "
        "training with sdpa runs tunesmith's blocked causal attention wherever a call is plain causal attention "
        "(no mask, no dropout): the same result, faster (benchmarks/attention_cpu.py).",
    )
    quantization: Literal["none", "4bit"] = setting(
        "none", "How the frozen base weights are held while LoRA trains: none (the precision's dtype: bf16 or "
        "fp32), or 4bit (QLoRA: NF4 with nested scales through bitsandbytes, about 0.53 bytes a weight of each "
        "linear layer; computed in bf16 where the machine has it, else fp32). 4bit changes the numbers the "
        "model computes (the base is rounded to 16 levels per block of 64), so it is never switched on for you: "
        "`train --estimate` recommends it when the bf16 weights would not fit. Causal-LM methods with LoRA "
        "only; needs `pip install tunesmith[quantize]`; the adapter is saved, not a merged copy "
        "(output.save_merged=false).",
    )
