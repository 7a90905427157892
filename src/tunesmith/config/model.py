"""model: which pre-trained model a run starts from, and how it is loaded."""

from __future__ import annotations

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
