"""Training throughput and peak memory of tunesmith's loop on the default model.

    python benchmarks/train_throughput.py [--steps 12] [--dataset alpaca-demo]

Each configuration runs in its own process (so peak RSS is its own), on SmolLM2-135M-Instruct with
LoRA r=16 on all linear layers, sequences up to 512 tokens, batches of 4, fp32. Printed: tokens/s in
steady state (first step excluded), peak RSS, final loss, and the fraction of the machine's measured
fp32 matmul peak (MFU, FLOPs per token = 4N for LoRA, N = parameters in matrix products, head included).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MODEL = "smollm2-135m-instruct"


def matmul_peak_gflops(seconds: float = 3.0, size: int = 2048) -> float:
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        torch.mm(a, b)
        count += 1
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def matmul_parameters() -> int:
    """Parameters that take part in matrix products: every linear layer, the LM head included."""
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.models.catalog import materialize

    model = AutoModelForCausalLM.from_pretrained(materialize(MODEL))
    linear = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))
    return linear


def worker_tunesmith(args: argparse.Namespace) -> dict:
    import tunesmith

    output = Path(args.scratch) / "runs"
    config = tunesmith.build_config({
        "model": MODEL,
        "data": {"train": args.dataset, "max_length": 512, "skip_invalid": True, "validation_split": 0.0},
        "lora": {"rank": 16, "alpha": 32, "target_modules": "all-linear"},
        "train": {"max_steps": args.steps, "batch_size": 4, "gradient_accumulation": 1, "eval_every": 0,
                  "eval_before": False, "save_every": 0, "batching": args.batching},
        "output": {"dir": str(output), "name": "bench", "save_merged": False, "overwrite": True},
    })
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steady = [r for r in records if "loss" in r][1:]
    tokens = sum(r["tokens"] for r in steady)
    seconds = sum(r["tokens"] / r["tokens_per_s"] for r in steady)
    return {"tokens_per_s": tokens / seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "final_loss": steady[-1]["loss"], "steps": len(steady) + 1, "tokens": tokens}


WORKERS = {"tunesmith": worker_tunesmith}


def run_worker(name: str, args: argparse.Namespace, scratch: str) -> dict:
    command = [sys.executable, __file__, "--worker", name, "--steps", str(args.steps), "--dataset", args.dataset,
               "--batching", args.batching, "--scratch", scratch]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"{name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--dataset", default="alpaca-demo")
    parser.add_argument("--batching", default="group_by_length")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--scratch", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        print(json.dumps(WORKERS[args.worker](args)))
        return

    import torch

    peak = matmul_peak_gflops()
    flops_per_token = 4 * matmul_parameters()
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads; fp32 matmul peak {peak:.0f} GFLOP/s; limit {peak * 1e9 / flops_per_token:.0f} tokens/s")
    print(f"model {MODEL}, LoRA r=16 all-linear, max_length 512, batch 4, {args.steps} steps on {args.dataset}\n")
    print(f"{'system':<24}{'tokens/s':>10}{'peak RSS MB':>13}{'final loss':>12}{'MFU':>8}")
    with tempfile.TemporaryDirectory() as scratch:
        for name in WORKERS:
            figures = run_worker(name, args, scratch)
            mfu = figures["tokens_per_s"] * flops_per_token / (peak * 1e9)
            print(f"{name:<24}{figures['tokens_per_s']:>10.1f}{figures['peak_rss_mb']:>13.0f}{figures['final_loss']:>12.4f}{mfu:>8.1%}")


if __name__ == "__main__":
    main()
