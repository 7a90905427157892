"""Training throughput by model size (`train_throughput.py --device cuda`, or `--sizes` on a CPU):
tunesmith against TRL's fastest configuration and TRL with Liger's kernels, one table.

Every system trains LoRA r=16 (alpha 32, no dropout) on all linear layers of the same random-weight
model (Qwen2.5's 0.5B, 1.5B and 3B shapes, random_models.py), on the same chat rows of exactly
--row-tokens tokens (the loss on the reply, about half of each row; no padding, so packing would
change nothing), --batch rows a step, --steps steps, in bf16 (on a CPU: where it has native bf16).
TRL runs SFTTrainer without activation checkpointing (its fastest settings on the CPU benchmark
were bf16 without checkpointing); "TRL + Liger" adds `use_liger_kernel=True` (Liger's Triton
kernels: RMSNorm, RoPE, SwiGLU and the fused linear cross-entropy). TRL and Liger are optional:
a system whose package is missing is reported "not installed".

Each system runs in its own process over every size in turn (the first step of each excluded).
Printed per size and system: tokens/s, model FLOPs utilisation (tokens/s x 4N against the bf16
matmul peak measured at the start of the run, N = parameters in matrix products, the output head
included), peak memory (torch.cuda.max_memory_allocated on CUDA, peak RSS on a CPU) and the loss of
the last step.
"""

from __future__ import annotations

import argparse
import gc
import importlib.util
import json
import resource
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import random_models  # noqa: E402

SYSTEMS = ("tunesmith", "TRL bf16", "TRL bf16 + Liger")
NEEDS = {"tunesmith": (), "TRL bf16": ("trl", "datasets"), "TRL bf16 + Liger": ("trl", "datasets", "liger_kernel")}
RANK, ALPHA, LEARNING_RATE = 16, 32, 2e-4
# Rows are made --row-tokens long under the chat template as apply_chat_template counts; a tool may add
# a token or two (a closing newline): the length limit leaves room, so that no system truncates a row.
MARGIN = 8


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The size benchmark's options, on train_throughput.py's parser."""
    parser.add_argument("--device", default="cpu", help="cpu (the Alpaca/movie-review benchmark unless --sizes) or cuda "
                                                        "(the benchmark by model size)")
    parser.add_argument("--sizes", nargs="+", choices=list(random_models.SHAPES),
                        help="model sizes to train (default with --device cuda: 0.5b 1.5b 3b)")
    parser.add_argument("--row-tokens", type=int, default=1024, help="tokens of every row (size benchmark)")
    parser.add_argument("--batch", type=int, default=8, help="rows a step (size benchmark)")
    parser.add_argument("--steps", type=int, default=12, help="optimizer steps per run, the first excluded (size benchmark)")
    parser.add_argument("--tokenizer", help="folder with SmolLM2's tokenizer (default: the catalog's SmolLM2)")
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "tunesmith-bench-models"),
                        help="where the random-weight models are built once")
    parser.add_argument("--json", help="also write the results as JSON here (size benchmark)")
    parser.add_argument("--budget-s", type=float, default=0, help="seconds for all systems together (0: no limit); "
                                                                   "each system's process gets its share of what is left")


def missing_package(system: str, device: str) -> str | None:
    """Why `system` cannot run here ("not installed", "needs CUDA"), or None."""
    for module in NEEDS[system]:
        if importlib.util.find_spec(module) is None:
            return f"not installed ({module})"
    if "Liger" in system and not device.startswith("cuda"):
        return "needs CUDA (Triton kernels)"
    return None


def main(args: argparse.Namespace) -> dict:
    import torch

    started = time.monotonic()
    device, sizes = args.device, args.sizes or ["0.5b", "1.5b", "3b"]
    tokenizer = random_models.tokenizer_folder(args.tokenizer)
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    runs = []
    for size in sizes:
        folder = random_models.model_folder(size, cache, tokenizer, device)
        rows = random_models.chat_rows(tokenizer, args.row_tokens, args.batch * args.steps,
                                       cache / f"rows-{args.row_tokens}-{args.batch * args.steps}.jsonl")
        runs.append({"size": size, "folder": str(folder), "rows": str(rows), "parameters": random_models.matmul_parameters(folder)})
    peak = random_models.bf16_peak_tflops(device)
    name = torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    report = {"device": name, "torch": torch.__version__, "bf16_peak_tflops": peak, "row_tokens": args.row_tokens,
              "batch": args.batch, "steps": args.steps, "rows": []}
    print(f"{name}, torch {torch.__version__}; bf16 matmul peak {peak:.1f} TFLOP/s; LoRA r={RANK} all-linear, "
          f"{args.batch} rows of {args.row_tokens} tokens a step, {args.steps} steps (the first excluded)\n", flush=True)
    for index, system in enumerate(SYSTEMS):
        absent = missing_package(system, device)
        left = args.budget_s - (time.monotonic() - started) if args.budget_s else None
        if absent is None and left is not None and left < 10:
            absent = "not run (the check's time ran out)"
        results = {} if absent else run_system(system, runs, args, device, left / (len(SYSTEMS) - index) if left else None)
        for run in runs:
            figures = {"status": absent} if absent else results.get(run["size"], {"status": results.get("", "failed")})
            report["rows"].append(with_utilisation({"system": system, "size": run["size"], "parameters": run["parameters"],
                                                    **figures}, peak))
        if args.json:
            Path(args.json).write_text(json.dumps(report, indent=1))
    print_table(report)
    return report


def with_utilisation(row: dict, peak_tflops: float) -> dict:
    if row.get("tokens_per_s"):
        row["mfu"] = row["tokens_per_s"] * 4 * row["parameters"] / (peak_tflops * 1e12)
    return row


def run_system(system: str, runs: list[dict], args: argparse.Namespace, device: str, timeout: float | None) -> dict:
    """{size: figures} from one worker process over every size; "" holds why none came back."""
    command = [sys.executable, __file__, "--worker", system, "--device", device, "--runs", json.dumps(runs),
               "--row-tokens", str(args.row_tokens), "--batch", str(args.batch), "--steps", str(args.steps)]
    began = time.monotonic()
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
        stdout, stderr, ended = done.stdout, done.stderr, f"exit {done.returncode}"
    except subprocess.TimeoutExpired as exc:
        stdout, stderr = _text(exc.stdout), _text(exc.stderr)
        ended = f"timed out after {time.monotonic() - began:.0f} s"
    results = {}
    for line in stdout.splitlines():
        if line.startswith("RESULT "):
            figures = json.loads(line[len("RESULT "):])
            results[figures.pop("size")] = figures
    measured = sum(r.get("status") == "ok" for r in results.values())
    if measured < len(runs):  # the worker's own output says why
        print(f"{system}: {ended}; {measured} of {len(runs)} sizes measured\n{stderr[-4000:]}", flush=True)
    if len(results) < len(runs):
        results[""] = f"failed ({ended})"
    return results


def _text(output: bytes | str | None) -> str:
    return output.decode(errors="replace") if isinstance(output, bytes) else (output or "")


def print_table(report: dict) -> None:
    header = f"{'size':<6}{'params':>9}  {'system':<20}{'tokens/s':>11}{'MFU':>8}{'peak MB':>10}{'loss':>9}"
    print(header)
    print("-" * len(header))
    for row in report["rows"]:
        if "tokens_per_s" not in row:
            print(f"{row['size']:<6}{row['parameters'] / 1e9:>8.2f}B  {row['system']:<20}{row['status']}")
            continue
        print(f"{row['size']:<6}{row['parameters'] / 1e9:>8.2f}B  {row['system']:<20}{row['tokens_per_s']:>11.0f}"
              f"{row['mfu']:>8.1%}{row['peak_memory_mb']:>10.0f}{row['loss']:>9.4f}")
    print(flush=True)


# --------------------------------------------------------------------------------------- workers


def worker(args: argparse.Namespace) -> None:
    """One system over every size, smallest first: a RESULT line per size as it finishes."""
    import torch

    for run in json.loads(args.runs):
        if args.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats()
        with tempfile.TemporaryDirectory() as scratch:
            try:
                train = train_tunesmith if args.worker == "tunesmith" else train_trl
                figures = train(run, args, Path(scratch))
                figures["status"] = "ok"
            except Exception as exc:  # this size fails; the next runs
                traceback.print_exc()
                figures = {"status": f"failed: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"}
        if "tokens_per_s" in figures:
            figures["peak_memory_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if args.device.startswith("cuda")
                                         else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print("RESULT " + json.dumps({"size": run["size"], **figures}), flush=True)
        gc.collect()
        if args.device.startswith("cuda"):
            torch.cuda.empty_cache()


def train_tunesmith(run: dict, args: argparse.Namespace, scratch: Path) -> dict:
    import tunesmith

    config = tunesmith.build_config({
        "model": run["folder"],
        "data": {"train": run["rows"], "max_length": args.row_tokens + MARGIN, "validation_split": 0.0, "audit": "off"},
        "lora": {"rank": RANK, "alpha": ALPHA, "dropout": 0.0, "target_modules": "all-linear"},
        "train": {"max_steps": args.steps, "batch_size": args.batch, "gradient_accumulation": 1,
                  "learning_rate": LEARNING_RATE, "warmup_ratio": 0.0, "eval_every": 0, "eval_before": False,
                  "save_every": 0, "device": args.device},
        "output": {"dir": str(scratch), "name": "run", "save_merged": False, "overwrite": True},
        "eval": {"compare": False},
    })
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in records if "loss" in r]
    steady = steps[1:]
    return {"tokens_per_s": sum(r["tokens"] for r in steady) / sum(r["tokens"] / r["tokens_per_s"] for r in steady),
            "steps": len(steps), "loss": steps[-1]["loss"]}


def train_trl(run: dict, args: argparse.Namespace, scratch: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from tunesmith.models.device import cpu_has_native_bf16

    cuda = args.device.startswith("cuda")
    bf16 = cuda or cpu_has_native_bf16()
    rows = [json.loads(line)["messages"] for line in Path(run["rows"]).read_text().splitlines()]
    dataset = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    tokens_per_batch: list[int] = []
    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if cuda:
                torch.cuda.synchronize()
            step_ends.append(time.perf_counter())

    config = SFTConfig(
        output_dir=str(scratch), use_cpu=not cuda, bf16=bf16, gradient_checkpointing=False, packing=False,
        max_length=args.row_tokens + MARGIN, per_device_train_batch_size=args.batch, gradient_accumulation_steps=1,
        max_steps=args.steps, learning_rate=LEARNING_RATE, lr_scheduler_type="constant", max_grad_norm=1.0,
        logging_steps=1, save_strategy="no", report_to=[], seed=42, optim="adamw_torch_fused",
        dataloader_num_workers=0, use_liger_kernel="Liger" in args.worker,
    )
    model = AutoModelForCausalLM.from_pretrained(run["folder"], dtype=torch.bfloat16 if bf16 else torch.float32)
    trainer = SFTTrainer(model=model, args=config, train_dataset=dataset,
                         processing_class=AutoTokenizer.from_pretrained(run["folder"]),
                         peft_config=LoraConfig(r=RANK, lora_alpha=ALPHA, lora_dropout=0.0, target_modules="all-linear",
                                                task_type="CAUSAL_LM"), callbacks=[StepClock()])
    collate = trainer.data_collator

    def counting_collator(examples: list) -> dict:
        batch = collate(examples)
        real = batch["attention_mask"].sum() if "attention_mask" in batch else batch["position_ids"].numel()
        tokens_per_batch.append(int(real))
        return batch

    trainer.data_collator = counting_collator
    trainer.train()
    losses = [log["loss"] for log in trainer.state.log_history if "loss" in log]
    steady_tokens = sum(tokens_per_batch[1:len(step_ends)])
    return {"tokens_per_s": steady_tokens / (step_ends[-1] - step_ends[0]), "steps": len(step_ends), "loss": losses[-1]}


def worker_main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--worker", choices=SYSTEMS, required=True)
    parser.add_argument("--device", required=True)
    parser.add_argument("--runs", required=True)
    for name in ("--row-tokens", "--batch", "--steps"):
        parser.add_argument(name, type=int, required=True)
    worker(parser.parse_args())


if __name__ == "__main__":
    worker_main()
