"""Models, rows and the matmul peak for benchmarks that run where no model hub can be reached (the
GPU check, benchmarks/gpu/check.sh): Qwen2.5's shapes with random weights, SmolLM2's tokenizer, chat
rows of an exact length made of plain words.

Speed and memory do not need trained weights. The shapes are Qwen2.5's public configs (the values
live in benchmarks/memory_by_size.py, which builds the same models for the CPU); "tiny" is a 2-layer,
hidden-64 model of the same family for dry runs. SmolLM2's token ids all lie inside Qwen's
vocabulary, whose size sets the embedding and the output head.
"""

from __future__ import annotations

import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # benchmarks/: memory_by_size

from memory_by_size import QWEN25, QWEN25_SHARED, SMOLLM, WORDS, write_rows  # noqa: E402

TINY = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)
SHAPES = {"tiny": TINY, **QWEN25}
RANDOM_PREFIX = "random:"  # `--model random:0.5b` in serve_throughput.py


def tokenizer_folder(given: str | None) -> Path:
    """`given` (a folder with SmolLM2's tokenizer files, as the GPU check carries them), else the
    catalog's SmolLM2 (materialized from its registry package the first time)."""
    if given:
        return Path(given)
    from tunesmith.models.catalog import materialize

    return materialize(SMOLLM)


def model_folder(size: str, cache: Path, tokenizer_dir: Path, device: str = "cpu") -> Path:
    """A Hugging Face folder of a Qwen2.5-shaped model with random bf16 weights, built once under
    `cache` (on `device`: a 3B model is initialised in a second on a GPU, in a minute on a CPU)."""
    folder = cache / f"qwen2.5-{size}-random"
    if (folder / "config.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    config = Qwen2Config(**SHAPES[size], **QWEN25_SHARED)
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built straight in bf16: no fp32 copy of 3B parameters
    try:
        with torch.device(device):
            model = AutoModelForCausalLM.from_config(config)
    finally:
        torch.set_default_dtype(torch.float32)
    staging = cache / f".partial-{folder.name}"
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(tokenizer_dir).save_pretrained(staging)
    del model
    if device.startswith("cuda"):
        torch.cuda.empty_cache()  # the benchmark's workers, other processes, need the memory
    staging.rename(folder)
    return folder


def matmul_parameters(folder: Path) -> int:
    """N of the FLOPs-per-token figure: parameters in matrix products, the output head included
    (counted from the config on the meta device: no weights are read)."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder))
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def chat_rows(tokenizer_dir: Path, tokens: int, count: int, out: Path) -> Path:
    """`count` chat rows of exactly `tokens` tokens under the tokenizer's chat template (the reply
    about half of each), as JSON lines: every system trains on the same rows with no padding. Made
    once per length and count (the words are drawn from a generator seeded with the length)."""
    return out if out.exists() else write_rows(tokenizer_dir, tokens, count, out)


def synthetic_prompts(count: int, words: int = 24, seed: int = 0) -> list[str]:
    """`count` user prompts of plain words, for serving where no data set can be fetched."""
    rng = random.Random(seed)
    return [f"Write a short story about {' '.join(rng.choice(WORDS) for _ in range(words + i % 7))}."
            for i in range(count)]


def bf16_peak_tflops(device: str) -> float:
    """The bf16 matmul peak measured now: on CUDA an 8192^3 product (3 warm-ups, 10 timed between
    CUDA events), on a CPU a 1024^3 one for about half a second."""
    import torch

    if device.startswith("cuda"):
        a = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
        b = torch.randn(8192, 8192, dtype=torch.bfloat16, device=device)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        end.record()
        torch.cuda.synchronize()
        seconds = start.elapsed_time(end) / 1000
        del a, b
        torch.cuda.empty_cache()
        return 10 * 2 * 8192**3 / seconds / 1e12
    a, b = torch.randn(1024, 1024, dtype=torch.bfloat16), torch.randn(1024, 1024, dtype=torch.bfloat16)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < 0.5:
        a @ b
        count += 1
    return count * 2 * 1024**3 / (time.perf_counter() - started) / 1e12
