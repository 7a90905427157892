"""Training throughput, peak memory and final loss: tunesmith against TRL's SFTTrainer, one run.

    python benchmarks/train_throughput.py                   # Alpaca demo and movie reviews
    python benchmarks/train_throughput.py --datasets alpaca --examples 64

Every system trains SmolLM2-135M-Instruct with LoRA r=16 (alpha 32, no dropout) on all linear layers,
on the same rows (at most 512 tokens each), 4 examples per step, one epoch, AdamW at 2e-4 with 5%
warmup and cosine decay, the loss on the assistant's reply only. Each system runs in its own process
(peak RSS is its own), one after the other, repeated `--repeats` times in alternation.

Printed per system: tokens/s in steady state (the first step excluded), peak RSS, the loss of its
final adapter on held-out rows (the same rows and code for every system), and the fraction of the
machine's limit: tokens/s x FLOPs per token / measured matmul peak, FLOPs per token = 4N for LoRA
(N = parameters in matrix products, the output head included), against the fp32 peak (the issue's
definition) and against the bf16 peak. The header names the CPU and the flags that set those peaks
(AVX-512 BF16 and AMX raise the bf16 one several times), and the matrix-product speed at the model's
own layer shapes for micro-batches of 512 and 2048 positions: with AMX, products of a 576-wide model
reach much less of the peak than square ones, which bounds any tool's fraction. The benchmark restarts
itself under tcmalloc where installed, as the CLI does (allocator.py); the header names the allocator.

TRL configurations: its defaults as the issue describes them (bf16, activation checkpointing,
packing), the issue's "fastest CPU settings" (fp32, no checkpointing, packing), and, since this CPU
has native bf16, bf16 without checkpointing, with and without packing. TRL is a benchmark-only
dependency: `pip install -e .[bench]`.

    python benchmarks/train_throughput.py --device cuda        # by model size: 0.5B, 1.5B, 3B (random weights)

`--device cuda` (or `--sizes` on a CPU) runs the benchmark by model size instead: tunesmith, TRL's
fastest configuration and TRL with Liger's kernels on Qwen2.5-shaped models with random weights
(benchmarks/gpu/train_sizes.py says how).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

MODEL = "smollm2-135m-instruct"
MAX_LENGTH = 512
BATCH = 4
LEARNING_RATE = 2e-4
DATASETS = {"alpaca": "alpaca-demo", "movie-reviews": "movie-review-polarity:train"}


@dataclass(frozen=True)
class System:
    name: str
    tool: str  # tunesmith | trl
    bf16: bool = False
    checkpointing: bool = False
    packing: bool = False
    batching: str = "group_by_length"  # tunesmith only


SYSTEMS = [
    System("tunesmith", "tunesmith"),
    System("TRL defaults (bf16, ckpt, packing)", "trl", bf16=True, checkpointing=True, packing=True),
    System("TRL fp32, packing", "trl", packing=True),
    System("TRL bf16, packing", "trl", bf16=True, packing=True),
    System("TRL bf16", "trl", bf16=True),
]
# In the held-out loss comparison only: tunesmith with batches drawn in random order, as TRL draws them
# (length-grouped batches weight examples differently under a per-batch token mean).
RANDOM_ORDER = System("tunesmith, random batches", "tunesmith", batching="pad")


# ------------------------------------------------------------------------------------------ data


def prepare_rows(dataset: str, examples: int, held_out: int, folder: Path) -> tuple[Path, Path]:
    """The same chat rows for every system: `examples` to train on, `held_out` to score the result."""
    rows = fitting_chat_rows(dataset, MODEL, MAX_LENGTH)
    random.Random(0).shuffle(rows)  # files can be sorted by label; every system gets the same shuffled rows
    train, test = rows[:examples], rows[examples:examples + held_out]
    for name, part in (("train", train), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({"messages": m}) + "\n" for m in part))
    return folder / "train.jsonl", folder / "test.jsonl"


def fitting_chat_rows(dataset: str, model: str, max_length: int, limit: int | None = None) -> list[list[dict]]:
    """`dataset`'s rows as chat messages, in file order, those within `max_length` tokens under
    `model`'s chat template (the first `limit` of them). Also used by distributed_scaling.py."""
    from transformers import AutoTokenizer

    from tunesmith.config import build_config
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.data.pipeline import read_source, render_source
    from tunesmith.data.tasks import build_label_task
    from tunesmith.models.catalog import materialize

    config = build_config({"data": {"train": dataset, "max_length": max_length}})
    raw = read_source(resolve_data_path(dataset), config.data)
    chats = render_source(raw, config.data, build_label_task(raw.examples, config.task)).examples
    tokenizer = AutoTokenizer.from_pretrained(materialize(model))
    rows = []
    for example in chats:
        messages = [m.as_dict() for m in example.messages]
        if len(tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)) <= max_length:
            rows.append(messages)
        if len(rows) == limit:
            break
    return rows


# --------------------------------------------------------------------------------------- workers


def worker_tunesmith(system: System, train_file: Path, out: Path, seed: int) -> dict:
    import tunesmith

    config = tunesmith.build_config({
        "model": MODEL,
        "data": {"train": str(train_file), "max_length": MAX_LENGTH, "validation_split": 0.0},
        "lora": {"rank": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"epochs": 1, "batch_size": BATCH, "gradient_accumulation": 1, "learning_rate": LEARNING_RATE,
                  "warmup_ratio": 0.05, "scheduler": "cosine", "eval_every": 0, "eval_before": False, "save_every": 0,
                  "seed": seed, "batching": system.batching},
        "output": {"dir": str(out), "name": "run", "save_merged": False, "overwrite": True},
    })
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    steady = steps[1:]
    return {"tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["tokens"] / r["tokens_per_s"] for r in steady),
            "steps": len(steps), "adapter": str(result.run_dir / "adapter"),
            "train_loss": sum(r["loss"] for r in steps[-len(steps) // 3:]) / len(steps[-len(steps) // 3:])}


def worker_trl(system: System, train_file: Path, out: Path, seed: int) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.catalog import materialize

    folder = materialize(MODEL)
    rows = [json.loads(line)["messages"] for line in train_file.read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    tokens_per_batch: list[int] = []
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            step_ends.append(time.perf_counter())

    args = SFTConfig(
        output_dir=str(out), use_cpu=True, bf16=system.bf16, gradient_checkpointing=system.checkpointing,
        packing=system.packing, max_length=MAX_LENGTH, per_device_train_batch_size=BATCH, gradient_accumulation_steps=1,
        learning_rate=LEARNING_RATE, lr_scheduler_type="cosine", warmup_steps=0.05, num_train_epochs=1, max_grad_norm=1.0,
        logging_steps=1, save_strategy="no", report_to=[], seed=seed, optim="adamw_torch", dataloader_num_workers=0,
    )
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    trainer = SFTTrainer(model=model, args=args, train_dataset=dataset, processing_class=AutoTokenizer.from_pretrained(folder),
                         peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"), callbacks=[StepClock()])
    collate = trainer.data_collator

    def counting_collator(examples: list) -> dict:
        batch = collate(examples)
        real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["position_ids"].numel()
        tokens_per_batch.append(int(real))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    trainer.save_model(str(out / "adapter"))
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    tail = losses[-len(losses) // 3:]
    steady_tokens = sum(tokens_per_batch[1:len(step_ends)])
    return {"tokens_per_s": steady_tokens / (step_ends[-1] - step_ends[0]), "steps": len(step_ends),
            "adapter": str(out / "adapter"), "train_loss": sum(tail) / len(tail)}


def held_out_loss(adapter: str, test_file: Path) -> float:
    """Loss of base + adapter on the held-out replies, computed the same way for every system (fp32)."""
    from tunesmith.config import build_config
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.eval.items import load_items
    from tunesmith.eval.perplexity import reference_loss
    from tunesmith.models.generate import load_for_generation

    loaded = load_for_generation(adapter, precision="fp32")
    items, _ = load_items(str(resolve_data_path(str(test_file))), build_config({}).data, None)
    return reference_loss(loaded, items)


def run_worker(args: argparse.Namespace) -> None:
    system = next(s for s in [*SYSTEMS, RANDOM_ORDER] if s.name == args.system)
    out = Path(args.out)
    if system.tool == "tunesmith":
        figures = worker_tunesmith(system, Path(args.train_file), out, args.seed)
    else:
        figures = worker_trl(system, Path(args.train_file), out, args.seed)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures), flush=True)


# ------------------------------------------------------------------------------------------ main


def matmul_peak_gflops(dtype_name: str, seconds: float = 1.0) -> float:
    """Best of the model's own matrix shapes (and a square one)."""
    import torch

    dtype = getattr(torch, dtype_name)
    shapes = ((2048, 576, 1536), (2048, 1536, 576), (2048, 576, 576), (2048, 2048, 2048))
    return max(2 * m * k * n / product_seconds(m, k, n, dtype, seconds) / 1e9 for m, k, n in shapes)


def product_seconds(m: int, k: int, n: int, dtype, seconds: float) -> float:  # noqa: ANN001 (torch imported late)
    """Seconds one [m, k] x [k, n] product takes, repeated for about `seconds` after a first untimed one."""
    import torch

    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    return (time.perf_counter() - started) / count


def cpu_line(native_bf16: bool) -> str:
    """The CPU's model and the flags that set its matmul peaks, and which peak the run's fraction is of."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name") and ":" in line:
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags") and ":" in line:
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    shown = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16") if f in flags]
    precision = "bf16: native, the run trains in it" if native_bf16 else "fp32: bf16 not native, the run trains in fp32"
    return f"cpu: {model}; flags {' '.join(shown) or 'unknown'}; peak of the run's precision: {precision}"


def shape_gflops(dtype_name: str, rows: int, seconds: float = 0.5) -> float:
    """Matrix-product speed at SmolLM2-135M's decoder shapes (q/o, k/v, gate/up, down) with `rows` rows,
    weighted by their FLOPs in a layer: what the layers' products can reach at that micro-batch width."""
    import torch

    dtype = getattr(torch, dtype_name)
    shapes = ((576, 576, 2), (576, 192, 2), (576, 1536, 2), (1536, 576, 1))  # k, n, products of that shape a layer
    flops = sum(count * 2 * rows * k * n for k, n, count in shapes)
    return flops / sum(count * product_seconds(rows, k, n, dtype, seconds / 4) for k, n, count in shapes) / 1e9


def matmul_parameters() -> int:
    import torch
    from transformers import AutoModelForCausalLM

    from tunesmith.models.catalog import materialize

    model = AutoModelForCausalLM.from_pretrained(materialize(MODEL))
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    parser.add_argument("--examples", type=int, default=128, help="training rows per system (default 128)")
    parser.add_argument("--held-out", type=int, default=48, help="rows the final adapters are scored on")
    parser.add_argument("--repeats", type=int, default=1, help="alternating rounds over all systems")
    parser.add_argument("--systems", nargs="+", help="only these systems (names as printed)")
    parser.add_argument("--loss-seeds", type=int, default=3,
                        help="seeds over which tunesmith (length-grouped and random-order batches) and TRL bf16 are trained to compare held-out loss")
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--system", help=argparse.SUPPRESS)
    parser.add_argument("--train-file", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    from gpu.train_sizes import add_arguments
    from gpu.train_sizes import main as train_by_size

    add_arguments(parser)  # --device cuda / --sizes: the benchmark by model size (benchmarks/gpu/train_sizes.py)
    args = parser.parse_args()
    if args.worker:
        run_worker(args)
        return
    if args.device != "cpu" or args.sizes:
        train_by_size(args)
        return
    from tunesmith.allocator import restart_under_tcmalloc

    # as the CLI trains: under tcmalloc where installed (glibc's malloc faults in every large tensor afresh:
    # 548 tokens/s against 421 for the same run on 2026-12-05); every system's worker inherits it
    restart_under_tcmalloc(sys.argv[1:])

    import torch

    from tunesmith.models.device import cpu_has_native_bf16

    # Without native bf16 (AVX2 only, say) PyTorch emulates it at ~1% of the fp32 speed: minutes to
    # measure a peak no run uses (tunesmith trains in fp32 there; TRL's bf16 rows mean nothing).
    native_bf16 = cpu_has_native_bf16()
    peaks = {"fp32": matmul_peak_gflops("float32"), "bf16": matmul_peak_gflops("bfloat16") if native_bf16 else None}
    flops_per_token = 4 * matmul_parameters()
    bf16_peak = f"{peaks['bf16']:.0f} GFLOP/s" if native_bf16 else "not native on this CPU (not measured)"
    from tunesmith.allocator import current_allocator

    # every system's worker inherits this process's allocator (LD_PRELOAD): tcmalloc or glibc's malloc
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {torch.get_num_threads()} threads, torch {torch.__version__}, "
          f"allocator {current_allocator()}; "
          f"matmul peak fp32 {peaks['fp32']:.0f} GFLOP/s, bf16 {bf16_peak}; limit (fp32) "
          f"{peaks['fp32'] * 1e9 / flops_per_token:.0f} tokens/s")
    print(cpu_line(native_bf16))
    dtype = "bfloat16" if native_bf16 else "float32"
    at_shapes = {rows: shape_gflops(dtype, rows) for rows in (512, 2048)}
    peak = peaks["bf16"] if native_bf16 else peaks["fp32"]
    print(f"matmul at SmolLM2-135M's layer shapes in {'bf16' if native_bf16 else 'fp32'} (the run's precision): "
          + ", ".join(f"{rows} rows {g:.0f} GFLOP/s ({g / peak:.0%} of its peak)" for rows, g in at_shapes.items())
          + "; a micro-batch of 4 Alpaca rows is 250-2000 positions")
    from tunesmith.models.catalog import CATALOG

    print(f"{CATALOG[MODEL].label}, LoRA r=16 all-linear, rows <= {MAX_LENGTH} tokens, {BATCH} examples per step, 1 epoch, "
          f"{args.examples} rows; held-out loss on {args.held_out} rows\n")
    systems = [s for s in SYSTEMS if not args.systems or s.name in args.systems]
    with tempfile.TemporaryDirectory() as scratch:
        for key in args.datasets:
            folder = Path(scratch) / key
            folder.mkdir()
            train_file, test_file = prepare_rows(DATASETS[key], args.examples, args.held_out, folder)
            results: dict[str, list[dict]] = {s.name: [] for s in systems}
            for round_number in range(args.repeats):
                for system in systems:
                    figures = run_system(system, train_file, test_file, folder / f"{system.tool}-{round_number}-{len(results[system.name])}", 42)
                    if figures:
                        results[system.name].append(figures)
            print_table(key, results, peaks, flops_per_token)
            if args.loss_seeds:
                compare_losses(key, [s for s in SYSTEMS if s.name in ("tunesmith", "TRL bf16")] + [RANDOM_ORDER],
                               train_file, test_file, folder, args.loss_seeds)


def run_system(system: System, train_file: Path, test_file: Path, out: Path, seed: int) -> dict | None:
    command = [sys.executable, __file__, "--worker", "--system", system.name, "--train-file", str(train_file),
               "--out", str(out), "--seed", str(seed)]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{system.name} failed:\n{done.stderr[-3000:]}")
        return None
    figures = json.loads(lines[-1][len("RESULT "):])
    figures["held_out_loss"] = held_out_loss(figures["adapter"], test_file)
    return figures


def compare_losses(dataset: str, systems: list[System], train_file: Path, test_file: Path, folder: Path, seeds: int) -> None:
    """Held-out loss over several seeds: is the difference between the tools larger than seed noise?"""
    import statistics

    print(f"held-out loss over {seeds} seeds (same rows, same examples per step, same schedule):")
    for system in systems:
        losses = [run_system(system, train_file, test_file, folder / f"seed-{system.tool}-{seed}", seed) for seed in range(1, seeds + 1)]
        values = [f["held_out_loss"] for f in losses if f]
        print(f"  {system.name:<36} mean {statistics.mean(values):.4f}  std {statistics.stdev(values) if len(values) > 1 else 0:.4f}  "
              f"({', '.join(f'{v:.4f}' for v in values)})")
    print()


def print_table(dataset: str, results: dict[str, list[dict]], peaks: dict[str, float | None], flops_per_token: int) -> None:
    best = {name: max(runs, key=lambda r: r["tokens_per_s"]) for name, runs in results.items() if runs}
    trl = {name: r for name, r in best.items() if name.startswith("TRL")}
    fastest_trl = max(trl.values(), key=lambda r: r["tokens_per_s"]) if trl else None
    leanest_trl = best.get("TRL defaults (bf16, ckpt, packing)")
    print(f"== {dataset}")
    header = (f"{'system':<36}{'tokens/s':>9}{'steps':>7}{'peak RSS MB':>13}{'train loss':>12}{'held-out loss':>15}"
              f"{'limit fp32':>12}{'bf16 peak':>11}")
    print(header)
    print("-" * len(header))
    for name, r in best.items():
        fp32 = r["tokens_per_s"] * flops_per_token / (peaks["fp32"] * 1e9)
        bf16 = f"{r['tokens_per_s'] * flops_per_token / (peaks['bf16'] * 1e9):.1%}" if peaks["bf16"] else "-"
        print(f"{name:<36}{r['tokens_per_s']:>9.1f}{r['steps']:>7}{r['peak_rss_mb']:>13.0f}{r['train_loss']:>12.4f}"
              f"{r['held_out_loss']:>15.4f}{fp32:>12.1%}{bf16:>11}")
    ours = best.get("tunesmith")
    if ours and fastest_trl:
        name = next(n for n, r in trl.items() if r is fastest_trl)
        print(f"tunesmith vs the fastest TRL configuration ({name}): {ours['tokens_per_s'] / fastest_trl['tokens_per_s']:.2f}x tokens/s")
    if ours and leanest_trl:
        print(f"tunesmith peak memory vs TRL defaults: {ours['peak_rss_mb'] / leanest_trl['peak_rss_mb']:.2f}x")
    print()


if __name__ == "__main__":
    main()
