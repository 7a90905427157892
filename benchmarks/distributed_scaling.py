"""Data-parallel scaling: the same short SFT LoRA run on 1 process and on N processes, one run.

    python benchmarks/distributed_scaling.py                      # 1 and 2 processes, SmolLM2-135M-Instruct
    python benchmarks/distributed_scaling.py --nproc 4 --steps 30
    python benchmarks/distributed_scaling.py --model tiny --examples 24 --steps 3   # a smoke test, seconds

Every configuration trains the same rows with the same update: one process with batch B against N
processes with batch B / N each (`tunesmith train --nproc N`), B = `--batch` examples per optimizer
step, LoRA r=16 on all linear layers, rows of at most 512 tokens, no validation, no checkpoints, no
evaluation. Each configuration runs in its own process tree through the CLI, as a user runs it.

Printed per configuration: tokens/s in steady state (the first step excluded; every process's
tokens over rank 0's step time), the steps, the wall time of the whole command (loading included)
and the last step's loss, which must be the same in every row (same update); then the scaling
efficiency, (tokens/s on N) / (N x tokens/s on 1). On CPU the machine's cores are shared out:
1 process uses all of them as threads, N processes use cores / N threads each (what `--nproc` sets),
so the efficiency measures what processes add over threads on the same cores, not more hardware.
On a GPU machine each process has a GPU of its own (1 GPU against N).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

MODEL = "smollm2-135m-instruct"
DATASET = "alpaca-demo"
MAX_LENGTH = 512


@dataclass(frozen=True)
class Figures:
    processes: int
    threads: int  # per process
    batch: int  # per process
    tokens_per_s: float
    steps: int
    wall_s: float
    last_loss: float


def tiny_model(folder: Path) -> Path:
    """A 2-layer, hidden-64 Llama with SmolLM2's tokenizer, as the tests build it: seconds per run."""
    import torch
    from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM

    from tunesmith.models.catalog import materialize

    tokenizer = AutoTokenizer.from_pretrained(materialize(MODEL))
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         tie_word_embeddings=True, bos_token_id=1, eos_token_id=2, pad_token_id=2)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(bos_token_id=1, eos_token_id=2, pad_token_id=2)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def train_rows(examples: int, folder: Path) -> Path:
    """The first `examples` chat rows of the Alpaca demo that fit in MAX_LENGTH tokens."""
    sys.path.insert(0, str(Path(__file__).parent))
    from train_throughput import fitting_chat_rows

    rows = fitting_chat_rows(DATASET, MODEL, MAX_LENGTH, limit=examples)
    path = folder / "train.jsonl"
    path.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    return path


def run_configuration(model: str, data: Path, out: Path, processes: int, batch: int, steps: int,
                      device: str) -> Figures:
    """`tunesmith train` on `processes` processes of batch / processes examples each."""
    settings = {"data.max_length": MAX_LENGTH, "data.validation_split": 0.0, "data.audit": "off",
                "lora.rank": 16, "lora.alpha": 32, "lora.dropout": 0.0, "train.batch_size": batch // processes,
                "train.gradient_accumulation": 1, "train.max_steps": steps, "train.learning_rate": 2e-4,
                "train.warmup_ratio": 0.05, "train.eval_every": 0, "train.eval_before": False, "train.save_every": 0,
                "train.device": device, "output.dir": str(out), "output.save_merged": False, "eval.compare": False}
    command = [sys.executable, "-m", "tunesmith.cli", "train", "--model", model, "--data", str(data),
               "--output", f"nproc-{processes}", "--no-progress"]
    for key, value in settings.items():
        command += ["--set", f"{key}={value}"]
    if processes > 1:
        command += ["--nproc", str(processes)]
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"{processes} processes failed:\n{done.stderr[-3000:]}")
    records = [json.loads(line) for line in (out / f"nproc-{processes}" / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    steady = trained[1:] or trained
    tokens_per_s = sum(r["tokens"] for r in steady) / sum(r["tokens"] / r["tokens_per_s"] for r in steady)
    threads = int(os.environ.get("OMP_NUM_THREADS") or max(1, (os.cpu_count() or 1) // processes)) if processes > 1 \
        else _threads()
    return Figures(processes, threads, batch // processes, tokens_per_s, len(trained), wall, trained[-1]["loss"])


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def print_header(model: str, device: str) -> None:
    import peft
    import torch
    import transformers

    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    print(f"{datetime.now(UTC).isoformat(timespec='seconds')}; machine: {platform.machine()}, {os.cpu_count()} CPUs" + (f", {torch.cuda.device_count()} x {gpu}" if gpu else "") + f"; device {device}")
    print(f"Python {platform.python_version()}, torch {torch.__version__}, transformers {transformers.__version__}, "
          f"peft {peft.__version__}; model {model}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel run (default 2)")
    parser.add_argument("--model", default=MODEL, help=f"a model name or folder, or 'tiny' (default {MODEL})")
    parser.add_argument("--examples", type=int, default=64, help="training rows (default 64)")
    parser.add_argument("--batch", type=int, default=4, help="examples per optimizer step, over all processes (default 4)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per configuration (default 12)")
    parser.add_argument("--device", default="auto", help="train.device: auto, cpu or cuda (default auto)")
    args = parser.parse_args()
    if args.nproc < 2 or args.batch % args.nproc:
        raise SystemExit(f"--nproc {args.nproc} --batch {args.batch}: give 2 or more processes and a batch they divide")

    import torch

    device = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and torch.cuda.device_count() < args.nproc:
        raise SystemExit(f"--nproc {args.nproc}: this machine has {torch.cuda.device_count()} GPUs; give at most that many")
    with tempfile.TemporaryDirectory(prefix="tunesmith-scaling-") as scratch:
        folder = Path(scratch)
        model = str(tiny_model(folder / "tiny")) if args.model == "tiny" else args.model
        print_header(args.model, device)
        data = train_rows(args.examples, folder)
        print(f"SFT LoRA r=16 all-linear, {args.examples} Alpaca demo rows <= {MAX_LENGTH} tokens, {args.batch} examples "
              f"per optimizer step over all processes, {args.steps} steps, fp32/bf16 as train.precision=auto picks\n")
        results = [run_configuration(model, data, folder / "runs", n, args.batch, args.steps, device) for n in (1, args.nproc)]
    unit = "GPUs" if device == "cuda" else "threads each"
    header = f"{'processes':>9}{unit:>14}{'batch each':>12}{'tokens/s':>10}{'steps':>7}{'wall s':>8}{'last loss':>11}"
    print(header)
    print("-" * len(header))
    for r in results:
        print(f"{r.processes:>9}{r.processes if device == 'cuda' else r.threads:>14}{r.batch:>12}{r.tokens_per_s:>10.1f}"
              f"{r.steps:>7}{r.wall_s:>8.1f}{r.last_loss:>11.4f}")
    one, many = results
    print(f"\nscaling efficiency on {many.processes} processes: {many.tokens_per_s / (many.processes * one.tokens_per_s):.1%} "
          f"({many.tokens_per_s / one.tokens_per_s:.2f}x the tokens/s of 1 process)")
    if device == "cpu":
        print(f"note: on CPU the {os.cpu_count()} cores are shared out: 1 process runs {one.threads} threads, "
              f"{many.processes} processes run {many.threads} thread(s) each; the efficiency compares processes with "
              "threads on the same cores")


if __name__ == "__main__":
    main()
