"""The evaluation after a grpo run: the held-out prompts (eval.test) answered greedily by the base model,
by each run in eval.compare_runs and by the fine-tuned model, every answer scored by the run's reward
(eval/graded.py); writes eval/comparison.json, eval/predictions.jsonl and the report."""

from __future__ import annotations

import gc
import json
import time
from pathlib import Path

from tunesmith.config import EvalConfig, RunConfig
from tunesmith.data.prompts import PromptItem
from tunesmith.eval.graded import GradedComparison, GradedSystem, add_graded_intervals
from tunesmith.eval.items import subset
from tunesmith.eval.preference import held_out_prompts
from tunesmith.eval.report import print_comparison, write_report
from tunesmith.files import write_atomic
from tunesmith.models.generate import LoadedModel, generate, load_for_generation
from tunesmith.pipeline.folder import run_config
from tunesmith.progress import Stage
from tunesmith.training.grpo import grpo_reward
from tunesmith.training.rollout import RowReward


def evaluate_graded_run(run_dir: Path, test: str, settings: EvalConfig, *, show: bool = True) -> GradedComparison:
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    reward = grpo_reward(config)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    others, missing = [], []
    for name in settings.compare_runs:
        folder = compare_folder(name, config)
        (others.append((name, folder)) if folder is not None else missing.append(name))
    tuned = load_for_generation(str(run_dir), precision=settings.precision)
    prompts = subset(held_out_prompts(config, tuned, test), settings.max_rows)
    template = tuned.tokenizer.chat_template
    systems = [answer_and_grade(tuned, "fine-tuned", str(run_dir), prompts, reward, config)]
    del tuned
    gc.collect()
    base_spec = manifest["base_model"]["spec"]
    base = load_for_generation(base_spec, chat_template=template, precision=settings.precision)
    systems.insert(0, answer_and_grade(base, "base zero-shot", base_spec, prompts, reward, config))
    del base
    for number, (name, folder) in enumerate(others, start=1):
        gc.collect()
        other = load_for_generation(str(folder), precision=settings.precision)
        systems.insert(number, answer_and_grade(other, name, str(folder), prompts, reward, config))
        del other
    comparison = GradedComparison([p.where for p in prompts], [p.question for p in prompts], systems, reward_name(config))
    comparison.notes += [f"eval.compare_runs: {name!r} is not a finished run (no manifest.json in {name} or "
                         f"{Path(config.output.dir) / name}), so it is not in the table: train it, then `tunesmith compare "
                         f"{run_dir} --data {test} --with-run {name}` compares again" for name in missing]
    add_graded_intervals(comparison, settings.resamples, config.train.seed)
    save_graded(comparison, run_dir / "eval")
    reports = write_report(run_dir, None, graded=comparison)
    if show:
        print_comparison(comparison, *reports)
    return comparison


def answer_and_grade(loaded: LoadedModel, name: str, model: str, prompts: list[PromptItem], reward: RowReward,
                     config: RunConfig) -> GradedSystem:
    """Greedy answers (at most grpo.max_new_tokens, as in training) to every prompt, each scored by `reward`."""
    started = time.perf_counter()
    with Stage(f"evaluating {name}", total=len(prompts), unit="prompt") as stage:
        answers = generate(loaded, [p.messages for p in prompts], max_new_tokens=config.grpo.max_new_tokens,
                           batch_size=config.eval.batch_size, progress=stage.advance).texts
    scores = [float(score) for score in reward([p.question for p in prompts], answers, prompts)]
    return GradedSystem(name, model, answers, scores, time.perf_counter() - started)


def compare_folder(name: str, config: RunConfig) -> Path | None:
    """A run named in eval.compare_runs: a run folder, or a run's name under output.dir (None: not found)."""
    for folder in (Path(name).expanduser(), Path(config.output.dir) / name):
        if (folder / "manifest.json").is_file():
            return folder
    return None


def reward_name(config: RunConfig) -> str:
    grader = config.grpo.grader
    if grader is not None:
        return f"grader {grader.get('name', '')!r} ({grader.get('type')})"
    return f"preference.reward={config.preference.reward}"


def save_graded(comparison: GradedComparison, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "comparison.json", json.dumps(comparison.as_dict(), indent=1))
    write_atomic(folder / "predictions.jsonl", "".join(json.dumps(row, ensure_ascii=False) + "\n"
                                                       for row in comparison.rows()))
