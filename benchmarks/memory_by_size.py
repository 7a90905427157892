"""Peak memory by model size: tunesmith's automatic settings against TRL's defaults, same rows, one run.

    python benchmarks/memory_by_size.py                          # 135M, 0.5B, 1.5B, 3B; rows of 512 and 1024 tokens
    python benchmarks/memory_by_size.py --sizes 135m 0.5b --lengths 512
    python benchmarks/memory_by_size.py --fit-batch 4            # and the 3B fit: 4 rows of 1024 tokens a micro-batch
    python benchmarks/memory_by_size.py --sizes 7b --lengths 1024 # the 7-8B candidates (4 bits, bf16 + checkpointing)

Speed and memory do not need trained weights: 135M is SmolLM2-135M-Instruct (the catalog's model);
0.5B, 1.5B and 3B are built from Qwen2.5's public configs (Qwen/Qwen2.5-{0.5B,1.5B,3B}/config.json)
with random weights, saved once in bf16 under --cache, with SmolLM2's tokenizer (its ids are all
inside Qwen's vocabulary; the vocabulary's size, which sets the embedding and head, is Qwen's).

Every system trains LoRA r=16 (alpha 32) on all linear layers, on the same chat rows of exactly
--lengths tokens (the loss on the reply, half of each row), --batch rows a micro-batch, --steps
optimizer steps, each in its own process, so that its peak RSS is its own. tunesmith runs with its
defaults (bf16 weights, gradient_checkpointing=auto: its projection and decision are printed), and
again with checkpointing forced on ("ts+ckpt"), which is what TRL's defaults do: auto keeps it
off whenever the run fits, for speed, so that column is the like-for-like memory comparison;
TRL runs SFTTrainer with SFTConfig's defaults (bf16, gradient checkpointing on, the model loaded
in its checkpoint's dtype) and the same LoRA. TRL is a benchmark-only dependency: `pip install -e .[bench]`.

7b is Qwen2.5-7B's config (7.62B parameters, random weights, about 15 GB in bf16 under --cache). Its
row runs candidates instead (--large-tools), one process at a time, each skipped with a line where
a rough projection of its peak passes the memory available: tunesmith and TRL with the base in 4
bits (model.quantization=4bit; TRL's SFTTrainer given the same BitsAndBytesConfig), with and without
checkpointing, and both in bf16 with checkpointing. The script starts itself under tcmalloc where
it is installed (allocator.py), so every run's process is under it; the header says which. Each
run's peak anonymous memory is printed beside its peak RSS: the RSS also counts the pages of the
weights' file mapped while loading, page cache that the kernel drops under pressure.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SMOLLM = "smollm2-135m-instruct"
# Qwen2.5's published configs (the fields that set the shapes; the rest are Qwen2Config's defaults).
QWEN25 = {
    "0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2),
    "1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2),
    "3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2),
    # Qwen/Qwen2.5-7B/config.json: 4 key-value heads, a larger vocabulary, an untied output head
    "7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4,
               vocab_size=152064, tie_word_embeddings=False),
}
QWEN25_SHARED = dict(vocab_size=151936, max_position_embeddings=32768, rms_norm_eps=1e-6, rope_theta=1000000.0,
                     tie_word_embeddings=True, hidden_act="silu", torch_dtype="bfloat16")
WORDS = ("river stone light garden window paper music winter forest orange silver market letter bridge "
         "evening pocket island morning candle shadow").split()


# ---------------------------------------------------------------------------------------- models


def model_folder(size: str, cache: Path) -> Path:
    """A Hugging Face folder for `size`: the catalog's SmolLM2, or a random-weight Qwen2.5 built once."""
    from tunesmith.models.catalog import materialize

    smollm = materialize(SMOLLM)
    if size == "135m":
        return smollm
    folder = cache / f"qwen2.5-{size}-random"
    if (folder / "model.safetensors").exists() or (folder / "model.safetensors.index.json").exists():
        return folder
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, Qwen2Config

    config = Qwen2Config(**{**QWEN25_SHARED, **QWEN25[size]})
    torch.manual_seed(0)
    torch.set_default_dtype(torch.bfloat16)  # built straight in bf16: no fp32 copy of 3B parameters
    model = AutoModelForCausalLM.from_config(config)
    torch.set_default_dtype(torch.float32)
    staging = cache / f".partial-{folder.name}"
    model.save_pretrained(staging)
    AutoTokenizer.from_pretrained(smollm).save_pretrained(staging)
    staging.rename(folder)
    return folder


def parameter_count(folder: Path) -> int:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(folder)
    hidden, layers, inter = config.hidden_size, config.num_hidden_layers, config.intermediate_size
    head_dim = hidden // config.num_attention_heads
    kv = config.num_key_value_heads * head_dim
    attention = hidden * hidden * 2 + hidden * kv * 2
    embeddings = config.vocab_size * hidden * (1 if config.tie_word_embeddings else 2)
    return layers * (attention + 3 * hidden * inter) + embeddings


# ------------------------------------------------------------------------------------------ rows


def write_rows(folder: Path, tokens: int, count: int, out: Path) -> Path:
    """`count` chat rows of exactly `tokens` tokens under the model's chat template, the reply about half."""
    import random

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    rng = random.Random(tokens)

    def length(messages: list[dict]) -> int:
        return len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False))

    rows = []
    for _ in range(count):
        words = [rng.choice(WORDS) for _ in range(tokens * 2)]
        prompt, reply = words[:tokens // 2], words[tokens:]
        messages = [{"role": "user", "content": " ".join(prompt)}, {"role": "assistant", "content": " ".join(reply)}]
        low, high = 1, len(reply)  # the longest reply that keeps the row within `tokens`
        while low < high:
            middle = (low + high + 1) // 2
            messages[1]["content"] = " ".join(reply[:middle])
            low, high = (middle, high) if length(messages) <= tokens else (low, middle - 1)
        messages[1]["content"] = " ".join(reply[:low])
        rows.append(messages)
    out.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    return out


# --------------------------------------------------------------------------------------- workers


def worker_tunesmith(folder: Path, rows: Path, tokens: int, batch: int, steps: int, out: Path,
                     checkpointing: bool | str = "auto", quantization: str = "none") -> dict:
    import tunesmith

    config = tunesmith.build_config({
        "model": {"name": str(folder), "quantization": quantization},
        "data": {"train": str(rows), "max_length": tokens, "validation_split": 0.0, "audit": "off"},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": steps, "batch_size": batch, "gradient_accumulation": 1, "learning_rate": 2e-4,
                  "eval_every": 0, "eval_before": False, "save_every": 0, "gradient_checkpointing": checkpointing},
        "output": {"dir": str(out), "name": "run", "save_merged": False, "overwrite": True},
        "eval": {"compare": False},
    })
    result = tunesmith.train(config, show_progress=False)
    return {"seconds_per_step": result.train_seconds / max(result.steps, 1)}


def worker_trl(folder: Path, rows: Path, tokens: int, batch: int, steps: int, out: Path,
               checkpointing: bool = True, quantization: str = "none", dtype: str | None = None) -> dict:
    """SFTTrainer with SFTConfig's defaults (bf16, gradient checkpointing on; the model loaded in fp32, TRL's
    default), the same with the base loaded in `dtype` (bfloat16: tunesmith's choice), or with the base in
    4 bits through the same BitsAndBytesConfig as tunesmith's (models/load.py) and checkpointing as asked."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer
    from trl import SFTConfig, SFTTrainer

    messages = [json.loads(line)["messages"] for line in rows.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in messages])
    args = SFTConfig(output_dir=str(out), use_cpu=True, max_length=tokens, per_device_train_batch_size=batch,
                     gradient_accumulation_steps=1, max_steps=steps, learning_rate=2e-4, save_strategy="no",
                     report_to=[], logging_steps=1, dataloader_num_workers=0, gradient_checkpointing=checkpointing,
                     **({"model_init_kwargs": {"dtype": dtype}} if dtype else {}))
    quantized = {}
    if quantization == "4bit":
        from tunesmith.models.load import four_bit_config

        quantized = {"quantization_config": four_bit_config(torch.bfloat16)}
    trainer = SFTTrainer(model=str(folder), args=args, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(folder),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"), **quantized)
    began = time.perf_counter()
    trainer.train()
    return {"seconds_per_step": (time.perf_counter() - began) / steps}


# tool -> (worker, its settings): "tunesmith" is its defaults; "trl" SFTConfig's (checkpointing on)
TOOLS = {
    "tunesmith": ("tunesmith", {}),
    "tunesmith-ckpt": ("tunesmith", {"checkpointing": True}),
    "tunesmith-4bit": ("tunesmith", {"quantization": "4bit"}),
    "tunesmith-4bit-ckpt": ("tunesmith", {"quantization": "4bit", "checkpointing": True}),
    "trl": ("trl", {}),
    "trl-4bit": ("trl", {"quantization": "4bit"}),
    "trl-4bit-nockpt": ("trl", {"quantization": "4bit", "checkpointing": False}),
    "trl-bf16": ("trl", {"dtype": "bfloat16"}),  # TRL's defaults with the base loaded in bf16, as tunesmith does
}
# the 7-8B row: 4 bits first (they fit), then bf16 with checkpointing
LARGE_TOOLS = ["tunesmith-4bit", "tunesmith-4bit-ckpt", "trl-4bit-nockpt", "trl-4bit", "tunesmith-ckpt", "trl-bf16", "trl"]


def sample_peak_anonymous(peak: list[float], stop: Any) -> None:
    """The largest RssAnon seen (every 50 ms): ru_maxrss also counts the weights' file pages mapped
    while loading (page cache, which the kernel can drop), anonymous pages are what must fit."""
    while not stop.wait(0.05):
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("RssAnon:"):
                    peak[0] = max(peak[0], float(line.split()[1]) * 1024)


def run_worker(args: argparse.Namespace) -> None:
    import threading

    kind, settings = TOOLS[args.tool]
    work = {"tunesmith": worker_tunesmith, "trl": worker_trl}[kind]
    peak, stop = [0.0], threading.Event()
    sampler = threading.Thread(target=sample_peak_anonymous, args=(peak, stop), daemon=True)
    sampler.start()
    figures = work(Path(args.model), Path(args.rows), args.tokens, args.batch, args.steps, Path(args.out), **settings)
    stop.set()
    sampler.join()
    figures["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9
    figures["peak_anon_gb"] = peak[0] / 1e9
    print("RESULT " + json.dumps(figures), flush=True)


def run_tool(tool: str, folder: Path, rows: Path, tokens: int, batch: int, steps: int, out: Path) -> dict | None:
    command = [sys.executable, __file__, "--worker", "--tool", tool, "--model", str(folder), "--rows", str(rows),
               "--tokens", str(tokens), "--batch", str(batch), "--steps", str(steps), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        killed = done.returncode < 0
        print(f"  {tool} {'was killed (out of memory?)' if killed else 'failed'}: {done.stderr[-1500:]}")
        return {"failed": "killed" if killed else "failed"}
    figures = json.loads(lines[-1][len("RESULT "):])
    decision = re.search(r"memory: (.*)", done.stderr)
    figures["memory_line"] = decision.group(1) if decision else ""
    projected = re.search(r"projected peak ([\d.]+) GB without activation checkpointing, ([\d.]+) GB with it", done.stderr)
    if projected:
        on = "checkpointing on" in figures["memory_line"]
        figures["projected_gb"] = float(projected.group(2) if on else projected.group(1))
        figures["checkpointing"] = "on" if on else "off"
    return figures


# ------------------------------------------------------------------------------------------ main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", nargs="+", default=["135m", "0.5b", "1.5b", "3b"], choices=["135m", *QWEN25])
    parser.add_argument("--lengths", nargs="+", type=int, default=[512, 1024], help="row lengths in tokens")
    parser.add_argument("--batch", type=int, default=1, help="rows a micro-batch (default 1)")
    parser.add_argument("--steps", type=int, default=1, help="optimizer steps per run (LoRA's peak is in the first)")
    parser.add_argument("--tools", nargs="+", default=["tunesmith", "tunesmith-ckpt", "trl"], choices=list(TOOLS),
                        help="tunesmith-ckpt: tunesmith with gradient_checkpointing=true, as TRL's defaults have it "
                        "(the 7b row runs its own candidates, --large-tools)")
    parser.add_argument("--large-tools", nargs="+", default=LARGE_TOOLS, choices=list(TOOLS),
                        help="the candidates of the 7b row, at the longest length, in this order")
    parser.add_argument("--candidates-for", nargs="+", default=["7b"], choices=["135m", *QWEN25],
                        help="sizes that run --large-tools (a table of their own) instead of --tools")
    parser.add_argument("--fit-batch", type=int, default=0,
                        help="also train the 3B model on this many rows of the longest length a micro-batch (tunesmith)")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "tunesmith" / "bench-models"))
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--tool", "--model", "--rows", "--out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--tokens", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    from tunesmith.allocator import restart_under_tcmalloc

    restart_under_tcmalloc(sys.argv[1:])  # this process and every run's under tcmalloc where installed
    print_header(args)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    small = [size for size in args.sizes if size not in args.candidates_for]
    runs = [(size, tokens, args.batch) for size in small for tokens in args.lengths]
    if args.fit_batch:
        runs.append(("3b", max(args.lengths), args.fit_batch))
    with tempfile.TemporaryDirectory() as scratch:
        if runs:
            print(TABLE_HEADER)
            print("-" * len(TABLE_HEADER))
        for size, tokens, batch in runs:
            folder = model_folder(size, cache)
            rows = write_rows(folder, tokens, max(8, batch * args.steps), Path(scratch) / f"rows-{tokens}.jsonl")
            tools = args.tools if batch == args.batch else ["tunesmith"]
            results = {tool: run_tool(tool, folder, rows, tokens, batch, args.steps, Path(scratch) / f"{tool}-{size}-{tokens}")
                       for tool in tools}
            print_row(size, parameter_count(folder), tokens, batch, results)
        for size in (s for s in args.sizes if s in args.candidates_for):
            run_large(size, cache, max(args.lengths), args, Path(scratch))


TABLE_HEADER = (f"{'model':<7}{'params':>8}{'row tokens':>12}{'batch':>7}{'tunesmith GB':>14}{'projected':>11}"
                f"{'auto ckpt':>11}{'ts+ckpt GB':>12}{'TRL GB':>8}{'vs TRL':>8}{'ckpt vs TRL':>13}"
                f"{'s/step ts':>11}{'ts+ckpt':>9}{'TRL':>7}")


def print_header(args: argparse.Namespace) -> None:
    import peft
    import torch
    import transformers

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
        args.tools = [t for t in args.tools if not t.startswith("trl")]
        args.large_tools = [t for t in args.large_tools if not t.startswith("trl")]
    try:
        from importlib.metadata import version
        bnb_version = version("bitsandbytes")
    except ImportError:
        bnb_version = "not installed"
    from tunesmith.allocator import current_allocator
    from tunesmith.training.memory import _free_bytes

    print(f"{datetime.now(UTC):%Y-%m-%d}, {platform.machine()}, {os.cpu_count()} CPUs, "
          f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 1e9:.1f} GB RAM "
          f"({_free_bytes(torch.device('cpu')) / 1e9:.1f} GB available); torch {torch.__version__}, "
          f"transformers {transformers.__version__}, peft {peft.__version__}, TRL {trl_version}, bitsandbytes "
          f"{bnb_version}; allocator {current_allocator()} (every run's process inherits it: tcmalloc by "
          "LD_PRELOAD, or glibc's malloc)")
    print(f"LoRA r=16 all-linear, {args.batch} row(s) a micro-batch, {args.steps} step(s); peak RSS of each run's "
          "own process (ru_maxrss, with the weights' file pages) and its peak anonymous RSS\n")


def room_needed_gb(tool: str, parameters: int) -> float:
    """Roughly what a 7-8B run takes at its peak, to skip one that cannot fit rather than push the machine
    into its out-of-memory killer: 4 bits ~0.55 bytes a linear weight, the embeddings and head in bf16;
    bf16 2 bytes a weight; TRL's defaults load in fp32 and peaked at 6.2 bytes a weight on 3B (19.07 GB, the table above);
    plus activations, adapters and their optimizer state (a few GB at 1024 tokens)."""
    if "4bit" in tool:
        return parameters * 0.85 / 1e9 + 6
    return parameters * (6.2 if tool == "trl" else 2.0) / 1e9 + 3


def run_large(size: str, cache: Path, tokens: int, args: argparse.Namespace, scratch: Path) -> None:
    """A row of candidates (the 7-8B one): each in its own process, one at a time, skipped where it cannot fit."""
    from tunesmith.training.memory import _meminfo_available

    folder = model_folder(size, cache)
    parameters = parameter_count(folder)
    rows = write_rows(folder, tokens, max(8, args.batch * args.steps), scratch / f"rows-{size}-{tokens}.jsonl")
    print(f"\n{size} ({parameters / 1e9:.2f}B parameters), {args.batch} x {tokens} tokens, {args.steps} step(s)")
    header = (f"{'run':<22}{'peak RSS GB':>12}{'peak anon GB':>13}{'projected':>10}{'ckpt':>6}{'s/step':>8}"
              f"{'load avg 1/5 min':>18}")
    print(header)
    print("-" * len(header))
    for tool in args.large_tools:
        available = _meminfo_available() / 1e9
        needed = room_needed_gb(tool, parameters)
        if needed > available:
            print(f"{tool:<22}not run: needs about {needed:.0f} GB, {available:.1f} GB available", flush=True)
            continue
        figures = run_tool(tool, folder, rows, tokens, args.batch, args.steps, scratch / f"{tool}-{size}")
        load = os.getloadavg()
        if "failed" in figures:
            print(f"{tool:<22}{figures['failed']}", flush=True)
            continue
        checkpointing = figures.get("checkpointing", "on" if ("ckpt" in tool or tool.startswith("trl"))
                                    and "nockpt" not in tool else "off")  # TRL's SFTConfig has it on
        projected = f"{figures['projected_gb']:.2f}" if "projected_gb" in figures else "-"
        print(f"{tool:<22}{figures['peak_rss_gb']:>12.2f}{figures['peak_anon_gb']:>13.2f}{projected:>10}"
              f"{checkpointing:>6}{figures['seconds_per_step']:>8.0f}{load[0]:>9.2f}/{load[1]:.2f}", flush=True)
        if figures.get("memory_line"):
            print(f"  {figures['memory_line']}", flush=True)


def print_row(size: str, parameters: int, tokens: int, batch: int, results: dict) -> None:
    ours, checkpointed, theirs = (results.get(tool) or {} for tool in ("tunesmith", "tunesmith-ckpt", "trl"))

    def gb(figures: dict) -> str:
        if not figures:
            return "-"
        return figures["failed"] if "failed" in figures else f"{figures['peak_rss_gb']:.2f}"

    def ratio(figures: dict) -> str:
        return (f"{figures['peak_rss_gb'] / theirs['peak_rss_gb']:.2f}x"
                if "peak_rss_gb" in figures and "peak_rss_gb" in theirs else "-")

    def pace(figures: dict) -> str:
        return f"{figures['seconds_per_step']:.1f}" if "seconds_per_step" in figures else "-"

    projected = f"{ours['projected_gb']:.2f}" if "projected_gb" in ours else "-"
    print(f"{size:<7}{parameters / 1e9:>7.2f}B{tokens:>12}{batch:>7}{gb(ours):>14}{projected:>11}"
          f"{ours.get('checkpointing', '-'):>11}{gb(checkpointed):>12}{gb(theirs):>8}{ratio(ours):>8}{ratio(checkpointed):>13}"
          f"{pace(ours):>11}{pace(checkpointed):>9}{pace(theirs):>7}", flush=True)

if __name__ == "__main__":
    main()
