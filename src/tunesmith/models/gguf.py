"""Turn a .gguf file into a normal Hugging Face folder (safetensors), once.

transformers reads GGUF by dequantizing every tensor (tens of seconds, mostly converting the
tokenizer) and then refuses to `save_pretrained` the result. We rebuild the model from its config
without the quantization marker, load the dequantized weights into it and save that: later runs
load the folder in a fraction of a second.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tunesmith.errors import ModelError


def convert_gguf(gguf_path: Path, out_dir: Path) -> Path:
    """Write `out_dir` as a safetensors model folder with tokenizer; atomic (staged, then renamed)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    gguf_path = Path(gguf_path)
    staging = out_dir.parent / f".{out_dir.name}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    print(f"tunesmith: converting {gguf_path.name} to safetensors (once; about 30 s)", flush=True)
    try:
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        loaded = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
    except Exception as exc:  # transformers raises many types for a bad file
        raise ModelError(
            f"{gguf_path}: could not be read as a GGUF model ({type(exc).__name__}: {exc}); "
            "check that the file is complete and its architecture is supported by transformers"
        ) from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.name_or_path = gguf_path.stem
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(loaded.state_dict(), assign=True)
    if config.tie_word_embeddings:
        model.tie_weights()
    model.generation_config = GenerationConfig.from_model_config(config)
    model.save_pretrained(staging)
    tokenizer.save_pretrained(staging)
    os.replace(staging, out_dir)
    return out_dir
