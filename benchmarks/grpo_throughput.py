"""GRPO: tunesmith against TRL's GRPOTrainer on the same model, prompts, reward and settings, one run.

    python benchmarks/grpo_throughput.py                                   # SmolLM2-135M-Instruct, 10 steps
    python benchmarks/grpo_throughput.py --model qwen2.5-coder-0.5b-instruct --steps 4
    python benchmarks/grpo_throughput.py --seeds 3                         # the reward curve over 3 seeds
    python benchmarks/grpo_throughput.py --threads 1                       # where other work shares the cores

Both systems train LoRA with tunesmith's defaults (r=16, alpha 32, no dropout, every linear layer but
the output head) on the same prompts of the catalog's `word-problems:train`, in the same order: a
step takes 4 prompts, samples 8 completions of each (at most 8 new tokens, temperature 1.0, top-p 1),
rewards a completion 1 when its reply is exactly the row's answer (tunesmith: OpenAI's string_check
grader on its stripped reply; TRL: a reward function comparing the stripped reply), and takes one
optimizer step over all 32 completions in micro-batches of 4 (TRL: per_device_train_batch_size 4,
gradient_accumulation_steps 8, so one generation per step), loss dapo, beta 0.04 (the reference is
the model with its adapter off in both), clip 0.2, group-scaled advantages, AdamW at 2e-4 with a cosine
decay and no warmup (the two tools' warmups differ on a 10-step run), gradient clipping at 1.0; bf16
autocast where the CPU computes bf16 natively (tunesmith decides this itself; TRL's bf16 follows it),
else fp32. TRL runs with gradient checkpointing off (like tunesmith's automatic choice on rows this
short) and, as a second row, with it on (GRPOConfig's default).

Each system runs in its own process (its peak RSS is its own), under tcmalloc where installed, as
tunesmith's CLI runs. Printed per system: rollout tokens/s (completion tokens over the seconds spent
sampling), the mean step time without the first step, where a step's time goes (sampling; scoring,
reference log-probabilities and bookkeeping; the forward and backward passes and the update), peak
RSS, and the reward mean per step. `--out` gets results.json and reward_curve.png. TRL is a
benchmark-only dependency: `pip install -e .[bench]`; without it only tunesmith runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

MODEL = "smollm2-135m-instruct"
DATASET = "word-problems:train"
GROUP_SIZE = 8
PROMPTS_PER_STEP = 4
MAX_NEW_TOKENS = 8
TEMPERATURE = 1.0
LEARNING_RATE = 2e-4
BETA = 0.04
LOSS_TYPE = "dapo"
MICRO_BATCH = 4  # completions a forward/backward pass, both systems
GRADER = {"type": "string_check", "name": "exact_answer", "operation": "eq",
          "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}


@dataclass(frozen=True)
class System:
    name: str
    tool: str  # tunesmith | trl
    checkpointing: bool = False  # TRL only: tunesmith decides itself (auto)


SYSTEMS = [System("tunesmith", "tunesmith"), System("TRL", "trl"), System("TRL, checkpointing (default)", "trl", True)]


# ------------------------------------------------------------------------------------------ prompts


def write_prompts(steps: int, out: Path) -> Path:
    """The first steps x 4 rows of word-problems:train, the file every system reads."""
    from tunesmith.data.catalog import resolve_data_path

    lines = resolve_data_path(DATASET).read_text().splitlines()[:steps * PROMPTS_PER_STEP]
    path = out / "prompts.jsonl"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def tunesmith_order(count: int, seed: int) -> list[int]:
    """The order tunesmith's first epoch takes `count` prompts in (training/rollout.py's next_prompts),
    so that TRL, unshuffled, gets the same prompts at every step; checked after the runs."""
    import numpy as np

    return np.random.default_rng([seed, 0]).permutation(count).tolist()


def model_folder(model: str) -> Path:
    """A catalog name's local Hugging Face folder (what both systems load), or a folder as given."""
    if Path(model).is_dir():
        return Path(model)
    from tunesmith.models.catalog import materialize

    return Path(materialize(model))


def same_prompt_tokens(folder: Path, prompts: Path) -> bool:
    """Whether tunesmith's prompt tokens (data/tokenize.py's encode_prompt) are the chat template's,
    which TRL applies, for every prompt."""
    from transformers import AutoTokenizer

    from tunesmith.data.examples import Message
    from tunesmith.data.template import analyze_template
    from tunesmith.data.tokenize import encode_prompt

    tokenizer = AutoTokenizer.from_pretrained(folder)
    generation = folder / "generation_config.json"
    info = analyze_template(tokenizer, json.loads(generation.read_text()).get("eos_token_id") if generation.is_file() else None)
    for line in prompts.read_text().splitlines():
        messages = json.loads(line)["messages"]
        theirs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        if encode_prompt(tokenizer, info, [Message(**m) for m in messages]) != list(theirs):
            return False
    return True


# --------------------------------------------------------------------------------------- workers


def worker_tunesmith(folder: Path, prompts: Path, steps: int, seed: int, out: Path) -> dict:
    import tunesmith
    from tunesmith.training import grpo

    roll_seconds: list[float] = []
    original_roll = grpo.GroupRounds.roll

    def timed_roll(self, state):  # noqa: ANN001, ANN202 - the benchmark's clock around a rollout
        started = time.perf_counter()
        made = original_roll(self, state)
        roll_seconds.append(time.perf_counter() - started)
        return made

    grpo.GroupRounds.roll = timed_roll
    config = tunesmith.build_config({
        "model": str(folder),
        "data": {"train": str(prompts), "validation_split": 0.0},
        "train": {"method": "grpo", "max_steps": steps, "batch_size": MICRO_BATCH, "learning_rate": LEARNING_RATE,
                  "warmup_ratio": 0.0, "scheduler": "cosine", "seed": seed, "eval_every": 0, "eval_before": False,
                  "save_every": 0},
        "grpo": {"grader": GRADER, "group_size": GROUP_SIZE, "prompts_per_step": PROMPTS_PER_STEP,
                 "max_new_tokens": MAX_NEW_TOKENS, "temperature": TEMPERATURE, "beta": BETA, "loss_type": LOSS_TYPE},
        "output": {"dir": str(out), "name": "run", "save_merged": False, "overwrite": True},
        "eval": {"compare": False},
    })
    result = tunesmith.train(config, show_progress=False)
    records = [json.loads(line) for line in (result.run_dir / "metrics.jsonl").read_text().splitlines()]
    steps_done = [r for r in records if r["step"] > 0 and "reward_mean" in r]
    rounds = sorted((result.run_dir / "rounds").glob("round-*.jsonl"))
    return {
        "rewards": [r["reward_mean"] for r in steps_done],
        "kl": [r.get("kl", 0.0) for r in steps_done],
        "step_seconds": [r["tokens"] / r["tokens_per_s"] for r in steps_done],
        "sample_seconds": [r["sample_seconds"] for r in steps_done],
        "rollout_seconds": roll_seconds,
        "completion_tokens": [r["completion_length_mean"] * GROUP_SIZE * PROMPTS_PER_STEP for r in steps_done],
        "prompts": [[json.loads(line)["prompt"] for line in path.read_text().splitlines()] for path in rounds],
    }


def worker_trl(folder: Path, prompts: Path, steps: int, seed: int, out: Path, checkpointing: bool) -> dict:
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from tunesmith.models.device import cpu_has_native_bf16

    rows = [json.loads(line) for line in prompts.read_text().splitlines()]
    rows = [rows[i] for i in tunesmith_order(len(rows), seed)]
    dataset = Dataset.from_list([{"prompt": row["messages"], "answer": row["answer"]} for row in rows])
    rollouts: list[dict] = []  # per generation: its prompts, rewards, completion tokens, replies

    def exact_answer(prompts: list, completions: list, answer: list, completion_ids: list, **_: object) -> list[float]:
        replies = [completion[0]["content"].strip() for completion in completions]  # as tunesmith's generate strips
        rewards = [1.0 if reply == expected else 0.0 for reply, expected in zip(replies, answer)]
        rollouts.append({"prompts": [p[-1]["content"] for p in prompts[::GROUP_SIZE]], "rewards": rewards,
                         "tokens": sum(len(ids) for ids in completion_ids), "replies": replies, "answers": list(answer)})
        return rewards

    step_ends: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001, ANN201
            step_ends.append(time.perf_counter())

    args = GRPOConfig(
        output_dir=str(out), use_cpu=True, bf16=cpu_has_native_bf16(), gradient_checkpointing=checkpointing,
        per_device_train_batch_size=MICRO_BATCH, gradient_accumulation_steps=GROUP_SIZE * PROMPTS_PER_STEP // MICRO_BATCH,
        num_generations=GROUP_SIZE, max_completion_length=MAX_NEW_TOKENS, temperature=TEMPERATURE, top_p=1.0,
        learning_rate=LEARNING_RATE, lr_scheduler_type="cosine", warmup_steps=0, max_steps=steps, max_grad_norm=1.0,
        beta=BETA, loss_type=LOSS_TYPE, epsilon=0.2, scale_rewards="group", num_iterations=1, shuffle_dataset=False,
        logging_steps=1, save_strategy="no", report_to=[], seed=seed, dataloader_num_workers=0,
    )
    trainer = GRPOTrainer(model=str(folder), reward_funcs=exact_answer, args=args, train_dataset=dataset,
                          peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules="all-linear",
                                                 task_type="CAUSAL_LM"), callbacks=[StepClock()])
    generate_seconds = time_method(trainer, "_generate_single_turn")
    rollout_seconds = time_method(trainer, "_generate_and_score_completions")
    began = time.perf_counter()
    trainer.train()
    ends = [began, *step_ends]
    kl = [log.get("kl", 0.0) for log in trainer.state.log_history if "reward" in log]
    return {"rewards": [statistics.mean(r["rewards"]) for r in rollouts], "kl": kl,
            "step_seconds": [b - a for a, b in zip(ends, ends[1:])], "sample_seconds": generate_seconds,
            "rollout_seconds": rollout_seconds, "completion_tokens": [r["tokens"] for r in rollouts],
            "prompts": [r["prompts"] for r in rollouts], "bf16": cpu_has_native_bf16(),
            "replies": [[reply, expected, reward] for r in rollouts
                        for reply, expected, reward in zip(r["replies"], r["answers"], r["rewards"])]}


def time_method(instance: object, name: str) -> list[float]:
    """Seconds of each call of instance.name, measured around it (the benchmark's clock, nothing else)."""
    seconds: list[float] = []
    original = getattr(instance, name)

    def timed(*args: object, **kwargs: object) -> object:
        started = time.perf_counter()
        made = original(*args, **kwargs)
        seconds.append(time.perf_counter() - started)
        return made

    setattr(instance, name, timed)
    return seconds


def run_worker(args: argparse.Namespace) -> None:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    system = next(s for s in SYSTEMS if s.name == args.system)
    folder, prompts, out = Path(args.model_folder), Path(args.prompts), Path(args.run_out)
    if system.tool == "tunesmith":
        figures = worker_tunesmith(folder, prompts, args.steps, args.seed, out)
    else:
        figures = worker_trl(folder, prompts, args.steps, args.seed, out, system.checkpointing)
    figures["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("RESULT " + json.dumps(figures), flush=True)


def run_system(system: System, folder: Path, prompts: Path, steps: int, seed: int, out: Path,
               threads: int) -> dict | None:
    command = [sys.executable, __file__, "--worker", "--system", system.name, "--model-folder", str(folder),
               "--prompts", str(prompts), "--steps", str(steps), "--seed", str(seed), "--run-out", str(out),
               "--threads", str(threads)]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)} if threads else None
    done = subprocess.run(command, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        print(f"{system.name} (seed {seed}) failed:\n{done.stderr[-3000:]}", flush=True)
        return None
    return json.loads(lines[-1][len("RESULT "):])


# ------------------------------------------------------------------------------------------ figures


def summarise(runs: list[dict]) -> dict:
    """One system's figures over its seeds: the steady state leaves each run's first step out."""
    def steady(key: str, run: dict) -> list[float]:
        values = run[key]
        return values[1:] if len(values) > 1 else values

    sampled = sum(sum(steady("completion_tokens", r)) for r in runs)
    sampling = sum(sum(steady("sample_seconds", r)) for r in runs)
    step = statistics.mean(s for r in runs for s in steady("step_seconds", r))
    rollout = statistics.mean(s for r in runs for s in steady("rollout_seconds", r))
    sample = statistics.mean(s for r in runs for s in steady("sample_seconds", r))
    curves = [r["rewards"] for r in runs]
    return {"rollout_tokens_per_s": sampled / sampling, "step_seconds": step, "sample_seconds": sample,
            "score_reference_seconds": rollout - sample, "train_seconds": step - rollout,
            "first_step_seconds": statistics.mean(r["step_seconds"][0] for r in runs),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs),
            "reward_curve": [statistics.mean(values) for values in zip(*curves)],
            "reward_mean": statistics.mean(statistics.mean(c) for c in curves),
            "reward_means_by_seed": [statistics.mean(c) for c in curves],
            "final_kl": statistics.mean(r["kl"][-1] for r in runs if r["kl"])}


def prompts_agree(results: dict[str, list[dict]]) -> bool:
    """Whether every system took the same prompts at every step, seed by seed."""
    ours = results.get("tunesmith", [])
    return all(theirs["prompts"] == mine["prompts"] for name, runs in results.items() if name != "tunesmith"
               for theirs, mine in zip(runs, ours))


def rewards_agree(results: dict[str, list[dict]]) -> bool:
    """Whether TRL's reward of each reply is what tunesmith's grader gives the same (stripped) reply."""
    from tunesmith.graders import run_grader

    return all(run_grader(GRADER, sample=reply, item={"answer": expected})["reward"] == reward
               for name, runs in results.items() if name != "tunesmith" for run in runs
               for reply, expected, reward in run.get("replies", []))


def cpu_flags() -> str:
    """The AVX-512 flags of the machine (bf16 among them: whether both systems train in bf16)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "unknown"
    import re

    return " ".join(sorted(set(re.findall(r"\bavx512[a-z_0-9]*", text)))) or "no AVX-512"


def print_header(model: str, steps: int, seeds: int) -> dict:
    import peft
    import torch
    import transformers

    from tunesmith.allocator import current_allocator
    from tunesmith.models.device import cpu_has_native_bf16

    try:
        import trl
        trl_version = trl.__version__
    except ImportError:
        trl_version = "not installed"
    machine = {"date": f"{datetime.now(UTC):%Y-%m-%d %H:%M}", "cpu": platform.machine(), "cpus": os.cpu_count(),
               "flags": cpu_flags(), "load_before": os.getloadavg(), "torch": torch.__version__,
               "transformers": transformers.__version__, "peft": peft.__version__, "trl": trl_version,
               "allocator": current_allocator(), "precision": "bf16" if cpu_has_native_bf16() else "fp32"}
    print(f"{machine['date']} UTC, {machine['cpu']}, {machine['cpus']} CPUs; AVX-512 flags: {machine['flags']}")
    print(f"torch {machine['torch']}, transformers {machine['transformers']}, peft {machine['peft']}, TRL {trl_version}; "
          f"allocator {machine['allocator']} (every system's process inherits it)")
    print(f"load average before (1/5/15 min): {'/'.join(f'{v:.2f}' for v in machine['load_before'])}")
    print(f"{model}, LoRA r=16 alpha 32 all-linear; {DATASET}, {PROMPTS_PER_STEP} prompts x {GROUP_SIZE} completions "
          f"a step, <= {MAX_NEW_TOKENS} new tokens, temperature {TEMPERATURE}; loss {LOSS_TYPE}, beta {BETA}, lr "
          f"{LEARNING_RATE:g} cosine; micro-batches of {MICRO_BATCH}; {steps} steps x {seeds} seed(s); precision "
          f"{machine['precision']} ({'native bf16 on this CPU' if machine['precision'] == 'bf16' else 'no native bf16'}: "
          "tunesmith's auto and TRL's bf16 flag alike)\n")
    return machine


def print_table(summaries: dict[str, dict]) -> None:
    header = (f"{'system':<30}{'rollout tok/s':>14}{'step s':>8}{'1st step s':>11}{'sampling s':>11}"
              f"{'score+ref s':>12}{'train s':>9}{'peak RSS MB':>13}{'reward':>8}{'final KL':>10}")
    print(header)
    print("-" * len(header))
    for name, s in summaries.items():
        print(f"{name:<30}{s['rollout_tokens_per_s']:>14.1f}{s['step_seconds']:>8.2f}{s['first_step_seconds']:>11.2f}"
              f"{s['sample_seconds']:>11.2f}{s['score_reference_seconds']:>12.2f}{s['train_seconds']:>9.2f}"
              f"{s['peak_rss_mb']:>13.0f}{s['reward_mean']:>8.3f}{s['final_kl']:>10.5f}")
    ours = summaries.get("tunesmith")
    for name, theirs in summaries.items():
        if ours and name != "tunesmith":
            print(f"tunesmith vs {name}: {theirs['step_seconds'] / ours['step_seconds']:.2f}x step speed, "
                  f"{ours['rollout_tokens_per_s'] / theirs['rollout_tokens_per_s']:.2f}x rollout tokens/s, "
                  f"{ours['peak_rss_mb'] / theirs['peak_rss_mb']:.2f}x peak RSS")
    print()


def print_curves(summaries: dict[str, dict], steps: int) -> None:
    names = list(summaries)
    print("reward mean per step (mean over seeds):")
    print(f"{'step':>5}" + "".join(f"{name:>32}" for name in names))
    for step in range(steps):
        print(f"{step + 1:>5}" + "".join(f"{summaries[n]['reward_curve'][step]:>32.3f}"
                                         if step < len(summaries[n]["reward_curve"]) else f"{'-':>32}" for n in names))
    completions = steps * GROUP_SIZE * PROMPTS_PER_STEP
    for name, s in summaries.items():
        by_seed = s["reward_means_by_seed"]
        spread = (f"std over seeds {statistics.stdev(by_seed):.3f}" if len(by_seed) > 1 else
                  f"binomial standard error {(s['reward_mean'] * (1 - s['reward_mean']) / completions) ** 0.5:.3f}")
        print(f"  {name:<30} mean {s['reward_mean']:.3f}, {spread} ({', '.join(f'{v:.3f}' for v in by_seed)})")
    print()


def draw_curves(summaries: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4))
    for name, s in summaries.items():
        axes.plot(range(1, len(s["reward_curve"]) + 1), s["reward_curve"], marker="o", label=name)
    axes.set_xlabel("step")
    axes.set_ylabel("reward mean (exact answer)")
    axes.set_title("GRPO on word-problems: tunesmith vs TRL GRPOTrainer")
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# ------------------------------------------------------------------------------------------ main


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="a catalog name or a Hugging Face folder (default %(default)s)")
    parser.add_argument("--steps", type=int, default=10, help="optimizer steps per run (default 10)")
    parser.add_argument("--seeds", type=int, default=1, help="runs per system, seeds 42, 43, ... (default 1)")
    parser.add_argument("--systems", nargs="+", choices=[s.name for s in SYSTEMS], help="only these systems")
    parser.add_argument("--threads", type=int, default=0,
                        help="threads per system (0: PyTorch's default, one per core); 1 where other work shares the cores")
    parser.add_argument("--out", default="runs/bench-grpo", help="results.json and reward_curve.png (default %(default)s)")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    for hidden in ("--system", "--model-folder", "--prompts", "--run-out"):
        parser.add_argument(hidden, help=argparse.SUPPRESS)
    parser.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    if args.worker:
        run_worker(args)
        return
    from tunesmith.allocator import restart_under_tcmalloc

    restart_under_tcmalloc(sys.argv[1:])  # this process and every system's under tcmalloc where installed
    machine = print_header(args.model, args.steps, args.seeds)
    machine["threads"] = args.threads or "default"
    print(f"threads per system: {machine['threads']}\n")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    folder = model_folder(args.model)
    prompts = write_prompts(args.steps, out)
    systems = [s for s in SYSTEMS if (not args.systems or s.name in args.systems)
               and (s.tool == "tunesmith" or machine["trl"] != "not installed")]
    results: dict[str, list[dict]] = {s.name: [] for s in systems}
    for seed in range(42, 42 + args.seeds):  # the systems alternate, seed by seed
        for number, system in enumerate(systems):
            figures = run_system(system, folder, prompts, args.steps, seed, out / f"{number}-{system.tool}-{seed}",
                                 args.threads)
            if figures:
                results[system.name].append(figures)
    summaries = {name: summarise(runs) for name, runs in results.items() if runs}
    machine["load_after"] = os.getloadavg()
    checks = {"same_prompt_tokens": same_prompt_tokens(folder, prompts), "same_prompts_each_step": prompts_agree(results),
              "same_reward": rewards_agree(results)}
    print_table(summaries)
    print_curves(summaries, args.steps)
    print(f"checks: {', '.join(f'{k.replace(chr(95), chr(32))}: {v}' for k, v in checks.items())}")
    print(f"load average after (1/5/15 min): {'/'.join(f'{v:.2f}' for v in machine['load_after'])}")
    (out / "results.json").write_text(json.dumps({"machine": machine, "model": args.model, "steps": args.steps,
                                                  "seeds": args.seeds, "checks": checks, "summaries": summaries,
                                                  "runs": results, "systems": [asdict(s) for s in systems]}, indent=1))
    if summaries:
        draw_curves(summaries, out / "reward_curve.png")
    print(f"wrote {out / 'results.json'} and {out / 'reward_curve.png'}")


if __name__ == "__main__":
    main()
