"""Whole jobs built from the stages: train, then (when the config asks) evaluate and report.

The CLI and the Python API call these; the stages themselves never call each other upward.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from tunesmith.config import EvalConfig, RunConfig, load_config
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import RunError
from tunesmith.eval.compare import (
    Comparison,
    SystemResult,
    evaluate_system,
    run_comparison,
    save_comparison,
)
from tunesmith.eval.generate import load_for_generation
from tunesmith.eval.items import EvalItem, load_items
from tunesmith.eval.metrics import normalize
from tunesmith.eval.report import write_report
from tunesmith.training.sft import RunResult, say


def train(config: RunConfig, *, resume: bool = False, show_progress: bool = True) -> RunResult:
    """Train; with `eval.test` set, evaluate on it (and compare with the base model) and write the report."""
    from tunesmith.training import sft

    result = sft.run(config, resume=resume, show_progress=show_progress)
    if config.eval.test:
        result.comparison = evaluate_run(result.run_dir, config.eval.test, config.eval)
    else:
        write_report(result.run_dir, None)
    return result


def evaluate_run(run_dir: Path, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None) -> Comparison:
    """Compare base zero-shot / base few-shot / fine-tuned on `test`; writes eval/ and report.md/.html."""
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(run_dir / "task.json")
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    labels = list(task.labels) if task else None
    pool: list[EvalItem] = []
    if settings.compare and settings.few_shot:
        pool, _ = load_items(config.data.train, config.data, task, config.task, skip_invalid=True)
    if settings.compare:
        comparison = run_comparison(run_dir, items, pool, settings, labels, seed=config.train.seed, say=say)
    else:
        loaded = load_for_generation(str(run_dir))
        comparison = Comparison("label" if labels else "generation", items,
                                [evaluate_system(loaded, "fine-tuned", [i.prompt for i in items], items, labels, settings)], labels)
    comparison.notes.extend(leakage_notes(items, pool))
    save_comparison(comparison, run_dir / "eval")
    markdown, html = write_report(run_dir, comparison)
    print(f"\n{comparison.table()}\n", flush=True)
    for note in comparison.notes:
        print(f"note: {note}")
    print(f"report: {markdown} and {html}")
    return comparison


def evaluate_model(target: str, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None) -> SystemResult:
    """Metrics of one model (a run folder or any model name) on `test`, zero-shot."""
    path = Path(target)
    config = run_config(path) if (path / "config.yaml").is_file() else RunConfig()
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(path / "task.json") if path.is_dir() else None
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    loaded = load_for_generation(target)
    result = evaluate_system(loaded, Path(target).name, [i.prompt for i in items], items,
                             list(task.labels) if task else None, settings)
    return result


def leakage_notes(items: list[EvalItem], pool: list[EvalItem]) -> list[str]:
    seen = {normalize(p.key) for p in pool}
    leaked = sum(normalize(item.key) in seen for item in items)
    if not leaked:
        return []
    return [f"{leaked} of {len(items)} test rows also appear in the training data: the scores overstate how well "
            "the model does on new inputs; remove them from one of the two files"]


def run_config(run_dir: Path) -> RunConfig:
    path = Path(run_dir) / "config.yaml"
    if not path.is_file():
        raise RunError(f"{run_dir}: not a run folder (no config.yaml); give the folder `tunesmith train` wrote")
    return load_config(path)
