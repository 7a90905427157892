"""Evaluations of a run's model, or of any model, on held-out rows: what a method asks for after
training, the comparison with the base model prompted zero-shot and few-shot, candidate base models
side by side before any training; each writes eval/ and the report."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.config import EvalConfig, RunConfig, replace
from tunesmith.data.tasks import LabelTask
from tunesmith.errors import RunError
from tunesmith.eval.classifier import evaluate_classifier, load_classifier
from tunesmith.eval.compare import (
    Comparison,
    SystemResult,
    evaluate_system,
    general_text_forgetting,
    generate_sample,
    run_comparison,
    save_comparison,
)
from tunesmith.eval.items import EvalItem, load_items
from tunesmith.eval.metrics import normalize
from tunesmith.eval.preference import pair_accuracy_summary, win_rate
from tunesmith.eval.report import print_comparison, write_report
from tunesmith.models.generate import load_for_generation
from tunesmith.models.processes import ALONE, Share
from tunesmith.pipeline.folder import run_config
from tunesmith.pipeline.spans import evaluate_span_run
from tunesmith.pipeline.tools import evaluate_tool_run, tool_rows
from tunesmith.training.metrics import perplexity
from tunesmith.training.session import RunResult, say


def shares_decoding(method: str, settings: EvalConfig) -> bool:
    """Whether the evaluation after training shares its decoding out over the processes: eval.test
    on a generative or a classification run. The others run on rank 0 alone."""
    return bool(settings.test) and method not in ("token-classify", "extractive-qa", "pretrain", "dpo", "online-dpo",
                                                  "grpo")


def evaluate_after_training(result: RunResult, config: RunConfig, share: Share = ALONE, *, show: bool = True) -> None:
    """What the method and config ask for after training. With a `share` of several processes
    (each calls this), the held-out decoding of eval.test is shared out over them and rank 0
    writes; the other evaluations run on rank 0 alone."""
    if shares_decoding(result.method, config.eval):
        if share.size > 1:
            say(f"evaluation: the rows of {config.eval.test} shared out over {share.size} processes")
        if result.method == "classify":
            result.comparison = evaluate_classifier_run(result.run_dir, config.eval.test, config.eval, share=share)
        else:
            result.comparison = evaluate_run(result.run_dir, config.eval.test, config.eval, share=share, show=show)
        return
    if not share.writes:
        return
    if result.method == "classify":
        write_report(result.run_dir, None)
    elif result.method in ("token-classify", "extractive-qa"):
        if config.eval.test:
            result.comparison = evaluate_span_run(result.run_dir, config.eval.test, config.eval)
        else:
            write_report(result.run_dir, None)
    elif result.method == "pretrain":
        result.comparison = None
        write_report(result.run_dir, None, perplexity=pretrain_perplexity(result, config.eval))
    elif result.method == "grpo" and config.eval.test:
        from tunesmith.pipeline.graded import evaluate_graded_run

        result.comparison = evaluate_graded_run(result.run_dir, config.eval.test, config.eval, show=show)
    elif result.method in ("dpo", "online-dpo"):
        figures = pair_accuracy_summary(result.run_dir) if result.method == "dpo" else win_rate(result.run_dir, config, config.eval.test)
        (result.run_dir / "eval").mkdir(exist_ok=True)
        (result.run_dir / "eval" / "preference.json").write_text(json.dumps(figures, indent=1))
        result.comparison = figures
        say("preference results: " + json.dumps(figures))
        write_report(result.run_dir, None, preference=figures)
    else:
        write_report(result.run_dir, None)


def evaluate_classifier_run(run_dir: Path, test: str, settings: EvalConfig, *,
                            columns: dict[str, str] | None = None, share: Share = ALONE) -> Comparison:
    """Metrics of a run's classification head on `test`; writes eval/ and the report (rank 0 of `share`)."""
    config = run_config(run_dir)
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    items, _ = load_items(test, data, LabelTask.load(Path(run_dir) / "task.json"), config.task, max_rows=settings.max_rows)
    comparison = evaluate_classifier(load_classifier(str(run_dir), share), items, settings)
    if not share.writes:
        return comparison
    save_comparison(comparison, Path(run_dir) / "eval")
    markdown, html = write_report(run_dir, comparison)
    print(f"\n{comparison.table()}\n\nreport: {markdown} and {html}", flush=True)
    return comparison


def pretrain_perplexity(result: RunResult, settings: EvalConfig) -> dict:
    """Perplexity before and after continued pretraining, on held-out domain text and on general text."""
    figures: dict = {}
    if result.baseline_val_loss is not None and result.val_loss is not None:
        figures["domain"] = {"before": perplexity(result.baseline_val_loss), "after": perplexity(result.val_loss)}
    if settings.general_text:
        forgetting = general_text_forgetting(result.run_dir, settings)
        figures["general"] = {"before": forgetting["ppl_before"], "after": forgetting["ppl_after"],
                              "source": forgetting["source"], "documents": forgetting["documents"]}
    (result.run_dir / "eval").mkdir(exist_ok=True)
    (result.run_dir / "eval" / "perplexity.json").write_text(json.dumps(figures, indent=1))
    for name, values in figures.items():
        say(f"{name} perplexity: {values['before']:.2f} before, {values['after']:.2f} after")
    return figures


def evaluate_run(run_dir: Path, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None,
                 share: Share = ALONE, show: bool = True) -> Comparison:
    """Compare base zero-shot / base few-shot / fine-tuned on `test`; writes eval/ and report.md/.html
    (rank 0 of `share`, whose processes share out the decoding)."""
    run_dir = Path(run_dir)
    rows = tool_rows(test, settings.max_rows)
    if rows:  # rows with tool calls: scored turn by turn and end to end, on rank 0
        return evaluate_tool_run(run_dir, rows, settings, show=show) if share.writes else None
    config = run_config(run_dir)
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(run_dir / "task.json")
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    labels = list(task.labels) if task else None
    pool: list[EvalItem] = []
    if settings.compare and (settings.few_shot or settings.rag.corpus == "train"):
        pool, _ = load_items(config.data.train, config.data, task, config.task, skip_invalid=True)
    if settings.compare:
        comparison = run_comparison(run_dir, items, pool, settings, labels, seed=config.train.seed, share=share)
    else:
        loaded = load_for_generation(str(run_dir), precision=settings.precision, share=share)
        comparison = Comparison("label" if labels else "generation", items,
                                [evaluate_system(loaded, "fine-tuned", [i.prompt for i in items], items, labels, settings)], labels,
                                scoring=settings.scoring)
    if not share.writes:
        return comparison
    comparison.notes.extend(leakage_notes(items, pool))
    if settings.groups and labels:
        comparison.notes.extend(group_notes(comparison, settings.groups))
    save_comparison(comparison, run_dir / "eval")
    reports = write_report(run_dir, comparison)
    if show:
        print_comparison(comparison, *reports)
    return comparison



def select_base_model(models: list[str], test: str, settings: EvalConfig, *, shots_from: str | None = None,
                      columns: dict[str, str] | None = None) -> Comparison:
    """Candidate base models on the same rows, before any training: each zero-shot and, with
    `shots_from` (solved rows to draw examples from), k-shot; one table with 95% intervals."""
    import gc

    from tunesmith.config import DataConfig, TaskConfig
    from tunesmith.eval.compare import add_intervals
    from tunesmith.eval.fewshot import TfidfIndex, few_shot_prompt, select_shots

    if len(set(models)) != len(models) or not models:
        raise RunError(f"--model {' '.join(models) or '(none)'}: name each candidate model once")
    data = DataConfig(columns=dict(columns or {}))
    items, task = load_items(test, data, None, TaskConfig(), max_rows=settings.max_rows)
    labels = list(task.labels) if task else None
    pool: list[EvalItem] = []
    if shots_from and settings.few_shot:
        pool, _ = load_items(shots_from, data, task, TaskConfig(), skip_invalid=True)
        pool = [p for p in pool if normalize(p.key) not in {normalize(i.key) for i in items}]
    comparison = Comparison("label" if labels else "generation", items, [], labels, settings.few_shot if pool else 0,
                            settings.few_shot_selection, tuned=None, scoring=settings.scoring)
    sample = generate_sample(len(items), settings, 0)
    zero_shot = [item.prompt for item in items]
    index = TfidfIndex([p.key for p in pool]) if pool and settings.few_shot_selection == "similar" else None
    shots = [few_shot_prompt(item, select_shots(item, n, pool, settings.few_shot, settings.few_shot_selection, 0, index))
             for n, item in enumerate(items)] if pool else []
    for model in models:
        loaded = load_for_generation(model, precision=settings.precision)
        name = Path(model).name if Path(model).exists() else model
        comparison.systems.append(evaluate_system(loaded, f"{name} zero-shot", zero_shot, items, labels, settings,
                                                  sample=sample))
        if shots:
            comparison.systems.append(evaluate_system(loaded, f"{name} {settings.few_shot}-shot", shots, items, labels,
                                                      settings, with_perplexity=False, sample=sample))
        del loaded
        gc.collect()
    add_intervals(comparison, settings.resamples)
    print(f"\n{comparison.table()}\n\n{comparison.verdict()}", flush=True)
    return comparison


def evaluate_model(target: str, test: str, settings: EvalConfig, *, columns: dict[str, str] | None = None) -> SystemResult:
    """Metrics of one model (a run folder or any model name) on `test`, zero-shot."""
    path = Path(target)
    config = run_config(path) if (path / "config.yaml").is_file() else RunConfig()
    data = replace(config.data, columns={**config.data.columns, **(columns or {})})
    task = LabelTask.load(path / "task.json") if path.is_dir() else None
    items, task = load_items(test, data, task, config.task, max_rows=settings.max_rows)
    loaded = load_for_generation(target, precision=settings.precision)
    result = evaluate_system(loaded, Path(target).name, [i.prompt for i in items], items,
                             list(task.labels) if task else None, settings)
    return result


def group_notes(comparison: Comparison, groups_file: str) -> list[str]:
    """eval.groups: each system's accuracy and macro F1 per group of rows, and the gaps between groups."""
    from tunesmith.data.audit.slices import load_groups, rows_by_group
    from tunesmith.eval.metrics import metrics_by_group

    members = rows_by_group([item.key for item in comparison.items], load_groups(groups_file))
    gold = [item.label for item in comparison.items]
    notes = []
    for system in comparison.systems:
        found = metrics_by_group(members, gold, system.predicted, comparison.labels)
        parts = [f"{name} accuracy {g['accuracy']:.3f}, macro F1 {g['macro_f1']:.3f} (n={g['rows']})"
                 for name, g in found["groups"].items() if g["rows"]]
        parts += [f"{name} no rows" for name, g in found["groups"].items() if not g["rows"]]
        gap = found["gap"]
        gap_text = f"; gap {gap['accuracy']:.3f} in accuracy, {gap['macro_f1']:.3f} in macro F1" if gap else ""
        notes.append(f"by group ({groups_file}; macro F1 over the labels present in the group's rows), {system.name}: "
                     f"{'; '.join(parts)}{gap_text}")
    return notes


def leakage_notes(items: list[EvalItem], pool: list[EvalItem]) -> list[str]:
    """The data audit's leakage check on the evaluated rows: exact, near and long shared answer runs."""
    from tunesmith.data.audit.duplicates import find_leaks

    leaks = find_leaks([p.where for p in pool], [p.key for p in pool], [i.where for i in items], [i.key for i in items],
                       [p.reference for p in pool], [i.reference for i in items])
    if not leaks:
        return []
    kinds = ", ".join(f"{sum(leak.kind == kind for leak in leaks)} {kind}" for kind in ("exact", "near", "ngram")
                      if any(leak.kind == kind for leak in leaks))
    return [f"{len(leaks)} of {len(items)} test rows also appear in the training data ({kinds}; e.g. {leaks[0].held_out} ~ "
            f"{leaks[0].train}): the scores overstate how well the model does on new inputs; remove them from one of "
            "the two files (tunesmith data audit TRAIN --test TEST lists them all)"]

