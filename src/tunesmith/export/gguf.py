"""GGUF files for llama.cpp and Ollama: the merged model, or the LoRA adapter alone.

The conversion is llama.cpp's own (export/converter.py). What tunesmith adds: the merged weights in
full precision, the run's chat template and stop tokens in the file's metadata (llama.cpp and Ollama
stop on `eos` and `eot`), K-quants through llama.cpp's quantizer where llama-cpp-python is
installed, and a read-back of every file before it is called done (export/verify.py).
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.errors import TunesmithError
from tunesmith.export.converter import run_module, run_script

# Written by llama.cpp's converter itself (numpy quantization in gguf-py).
DIRECT_TYPES = ("f32", "f16", "bf16", "q8_0")
# Need llama.cpp's quantizer (llama-cpp-python's `llama_model_quantize`); value: llama_ftype.
K_QUANTS = {"q4_k_m": 15, "q5_k_m": 17, "q6_k": 18, "q4_0": 2, "q3_k_m": 12}
QUANT_TYPES = (*DIRECT_TYPES, *K_QUANTS)


class ExportError(TunesmithError):
    """An export that could not be written or did not survive its read-back."""


@dataclass(frozen=True)
class ModelFiles:
    """What an export reads from a run folder."""

    run_dir: Path
    model_dir: Path | None  # a full causal-LM folder (merged adapter or full fine-tune), if any
    adapter_dir: Path | None  # the PEFT adapter, for LoRA runs
    base: str | None  # the adapter's base model, as the adapter names it
    method: str
    name: str


def read_run(run_dir: Path) -> ModelFiles:
    run_dir = Path(run_dir)
    config_path = run_dir / "config.yaml"
    if not config_path.is_file():
        raise ExportError(f"{run_dir}: not a run folder (no config.yaml); give the folder `tunesmith train` wrote")
    from tunesmith.config import load_config

    config = load_config(config_path)
    model_dir = run_dir / "model"
    adapter_dir = run_dir / "adapter"
    base = None
    if (adapter_dir / "adapter_config.json").is_file():
        base = json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    return ModelFiles(
        run_dir=run_dir,
        model_dir=model_dir if (model_dir / "config.json").is_file() else None,
        adapter_dir=adapter_dir if base else None,
        base=base,
        method=config.train.method,
        name=run_dir.name,
    )


def merged_model_folder(files: ModelFiles, scratch: Path) -> Path:
    """The run's full model: its model/ folder, or the adapter merged into its fp32 base now."""
    if files.model_dir is not None:
        return files.model_dir
    if files.adapter_dir is None:
        raise ExportError(f"{files.run_dir}: has neither model/ nor adapter/; the run did not finish, resume it with --resume")
    import torch
    from peft import PeftModel

    from tunesmith.models.load import load_causal_lm, load_tokenizer, resolve_model
    from tunesmith.models.save import save_model

    print(f"tunesmith: merging {files.adapter_dir} into its base {files.base} (fp32)", flush=True)
    source = resolve_model(files.base)
    model = PeftModel.from_pretrained(load_causal_lm(source, dtype=torch.float32), files.adapter_dir)
    tokenizer = load_tokenizer(type(source)(str(files.adapter_dir), "folder", str(files.adapter_dir)))
    stops = model.generation_config.eos_token_id
    stop_ids = tuple(stops) if isinstance(stops, list) else ((stops,) if stops is not None else ())
    return save_model(model, tokenizer, scratch / "merged", stop_ids)


def convert_model(model_dir: Path, out_file: Path, quant: str, stop_token_ids: tuple[int, ...]) -> None:
    """Write `out_file` (staged beside it, renamed when complete)."""
    if quant not in QUANT_TYPES:
        raise ExportError(f"--quant {quant}: not a GGUF type tunesmith writes; choose one of {', '.join(QUANT_TYPES)}")
    staging = out_file.with_name(f".{out_file.name}.partial")
    written = staging.with_name(staging.name + ".f16") if quant in K_QUANTS else staging
    if quant in K_QUANTS:
        _quantizer()  # fail before minutes of conversion, not after
    run_script("convert_hf_to_gguf.py", [str(model_dir), "--outfile", str(written),
                                          "--outtype", "f16" if quant in K_QUANTS else quant],
               what=f"converting {model_dir} to GGUF")
    written = _with_stop_tokens(written, stop_token_ids)
    if quant in K_QUANTS:
        _quantize(written, staging, quant)
        written.unlink()
    os.replace(staging if quant in K_QUANTS else written, out_file)


def convert_adapter(adapter_dir: Path, base_dir: Path, out_file: Path) -> None:
    """llama.cpp's LoRA GGUF (`llama-cli --lora FILE`), f16, from the PEFT adapter."""
    staging = out_file.with_name(f".{out_file.name}.partial")
    run_script("convert_lora_to_gguf.py", [str(adapter_dir), "--base", str(base_dir), "--outfile", str(staging),
                                            "--outtype", "f16"], what=f"converting the adapter {adapter_dir} to GGUF")
    os.replace(staging, out_file)


def _with_stop_tokens(path: Path, stop_token_ids: tuple[int, ...]) -> Path:
    """Make every stop token of the run end generation in llama.cpp: eos as converted, the turn-end
    token (when it differs) as eot. Rewrites the file only when something is missing."""
    from gguf import GGUFReader

    reader = GGUFReader(path)
    eos = _field_int(reader, "tokenizer.ggml.eos_token_id")
    others = [token for token in stop_token_ids if token != eos]
    del reader
    if not others:
        return path
    if len(others) > 1:
        print(f"tunesmith: GGUF holds one eot token; stop tokens {others[1:]} go into the Ollama Modelfile only", flush=True)
    rewritten = path.with_name(path.name + ".meta")
    run_module("gguf.scripts.gguf_new_metadata", [str(path), str(rewritten), "--special-token-by-id", "eot",
                                                   str(others[0]), "--force"], what="writing the stop token")
    path.unlink()
    os.replace(rewritten, path)
    return path


def _field_int(reader: Any, key: str) -> int | None:
    field = reader.fields.get(key)
    return None if field is None else int(field.parts[field.data[0]][0])


def field_value(reader: Any, key: str) -> Any:
    """A metadata value of a GGUFReader as plain Python (str, int, float or a list of them)."""
    field = reader.fields.get(key)
    if field is None:
        return None
    return field.contents()


def _quantizer() -> Any:
    try:
        import llama_cpp
    except ImportError:
        raise ExportError(
            "K-quants (q4_k_m, ...) need llama.cpp's quantizer, which tunesmith calls through llama-cpp-python: "
            "pip install 'tunesmith[llama-cpp]' (it compiles llama.cpp once, a few minutes), or export --quant q8_0"
        ) from None
    return llama_cpp


def _quantize(source: Path, target: Path, quant: str) -> None:
    llama_cpp = _quantizer()
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = K_QUANTS[quant]
    params.nthread = os.cpu_count() or 1
    status = llama_cpp.llama_model_quantize(str(source).encode(), str(target).encode(), params)
    if status != 0:
        raise ExportError(f"llama.cpp's quantizer failed on {source} ({quant}, status {status})")


def copy_tokenizer_files(source: Path, target: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja", "special_tokens_map.json"):
        if (source / name).is_file():
            shutil.copy2(source / name, target / name)
