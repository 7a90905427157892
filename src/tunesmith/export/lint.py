"""What llama.cpp's LoRA loader and vLLM refuse in a PEFT adapter, named with the fix, before anyone ships it."""

from __future__ import annotations

import json
from pathlib import Path

# vLLM's --max-lora-rank default; larger ranks load only when the server is started with a higher one.
VLLM_DEFAULT_MAX_RANK = 16
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
_EMBEDDING_OR_HEAD = ("embed_tokens", "lm_head", "wte", "word_embeddings", "embed_out", "output")


def lint_adapter(adapter_dir: Path, *, target: str) -> list[str]:
    """Problems that stop `target` ("vllm" or "llama.cpp") from loading the adapter; [] when none."""
    settings = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    problems = []
    saved = settings.get("modules_to_save") or []
    if saved:
        problems.append(f"modules_to_save {saved} holds whole trained modules, which {target} does not load from a "
                        "LoRA adapter; export the merged model (--format gguf) or train with lora.modules_to_save unset")
    targets = settings.get("target_modules") or []
    targets = [targets] if isinstance(targets, str) else targets
    heavy = [name for name in targets if name.split(".")[-1] in _EMBEDDING_OR_HEAD]
    if heavy:
        problems.append(f"LoRA on the embedding or output layer ({', '.join(heavy)}) is not served by {target}; "
                        "train with lora.target_modules limited to the attention and MLP projections")
    if settings.get("use_dora"):
        problems.append(f"DoRA adapters are not served by {target}; train plain LoRA (lora.use_dora=false)")
    if target == "vllm":
        rank = int(settings.get("r", 0))
        if rank not in VLLM_RANKS:
            problems.append(f"rank {rank} is not one vLLM accepts ({', '.join(map(str, VLLM_RANKS))}); train with one")
        embeddings = Path(adapter_dir) / "adapter_model.safetensors"
        if embeddings.is_file() and _has_new_embeddings(embeddings):
            problems.append("the adapter carries resized embeddings (a vocabulary larger than its base's), which "
                            "vLLM no longer loads; keep the base tokenizer's vocabulary")
    return problems


def vllm_notes(adapter_dir: Path) -> list[str]:
    """Things vLLM accepts only when told: a rank above its default maximum."""
    rank = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text()).get("r", 0))
    if rank > VLLM_DEFAULT_MAX_RANK:
        return [f"rank {rank} is above vLLM's default --max-lora-rank {VLLM_DEFAULT_MAX_RANK}: start vLLM with "
                f"--max-lora-rank {rank}"]
    return []


def _has_new_embeddings(path: Path) -> bool:
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as weights:
        return any("new_embeddings" in name or name.endswith("embed_tokens.weight") or name.endswith("lm_head.weight")
                   for name in weights.keys())
