"""Base model zero-shot, base model few-shot, fine-tuned model: the same rows, the same decoding.

This is the question a fine-tune has to answer: is the tuned model better at the task than the
model it started from, used as it is or with a few solved examples in its prompt?
"""

from __future__ import annotations

import gc
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from tunesmith.config import EvalConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.read import read_records
from tunesmith.eval.fewshot import TfidfIndex, few_shot_prompt, select_shots
from tunesmith.eval.intervals import system_intervals
from tunesmith.eval.items import EvalItem
from tunesmith.eval.metrics import label_metrics, map_answer_to_label, text_metrics
from tunesmith.eval.perplexity import reference_loss, text_loss
from tunesmith.eval.tables import cell, gain_verdict, text_table
from tunesmith.models.generate import LoadedModel, generate, load_for_generation
from tunesmith.models.processes import ALONE, Share
from tunesmith.models.score import score_labels
from tunesmith.progress import Stage
from tunesmith.training.metrics import perplexity


@dataclass
class SystemResult:
    name: str
    model: str
    answers: list[str | None]  # None: a row whose answer was not generated (scoring=likelihood, outside the sample)
    metrics: dict[str, Any]
    seconds: float
    new_tokens: int
    predicted: list[str | None] | None = None  # label tasks: the label each answer maps to
    rules: list[str] | None = None  # label tasks: the mapping rule that matched
    likelihood: list[str] | None = None  # label tasks: the most likely label per row (rank classification)


@dataclass
class Comparison:
    kind: Literal["label", "generation"]
    items: list[EvalItem]
    systems: list[SystemResult]
    labels: list[str] | None = None
    few_shot: int = 0
    selection: str = "random"
    forgetting: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)
    # {"systems": {name: {metric: Interval}}, "gains": {baseline name: {metric: Interval of tuned - baseline}}}
    intervals: dict[str, Any] | None = None
    tuned: str | None = "fine-tuned"  # the system whose gains are reported; None when comparing base models only
    scoring: str = "both"  # label tasks: eval.scoring (likelihood: `accuracy` is the most likely label's)

    @property
    def headline(self) -> list[str]:
        """The metrics the table shows, each with its interval where it has one."""
        if self.kind == "label":
            scored = self.scoring == "both" and any(s.likelihood is not None for s in self.systems)
            return ["accuracy", "macro_f1", *(["likelihood_accuracy"] if scored else [])]
        return ["exact_match", "contains_answer", "rouge_l", "reference_ppl"]

    @property
    def primary(self) -> str:
        """The metric the verdict and the gain column are about."""
        return "accuracy" if self.kind == "label" else "rouge_l"

    def system(self, name: str) -> SystemResult:
        return next(s for s in self.systems if s.name == name)

    def baselines(self) -> list[SystemResult]:
        """The systems the fine-tuned model is compared with (not the tuned model with retrieval)."""
        if self.tuned is None:
            return list(self.systems)
        return [s for s in self.systems if not s.name.startswith(self.tuned)]

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """One row per system: each metric with its 95% interval, and the fine-tuned model's gain over it."""
        systems = (self.intervals or {}).get("systems", {})
        gains = (self.intervals or {}).get("gains", {})
        likely = self.kind == "label" and self.scoring == "likelihood"
        header = ["system", *(f"{m.replace('_', ' ')}{' [95%]' if m != 'reference_ppl' else ''}" for m in self.headline)]
        if self.kind == "label":
            header.append("generated = most likely" if likely else "unparsed")
        if gains:
            header.append(f"{self.tuned} gain [95%]")
        header.append("seconds")
        rows = []
        for s in self.systems:
            row = [s.name, *(cell(s.metrics.get(m), systems.get(s.name, {}).get(m)) for m in self.headline)]
            if self.kind == "label":
                done = s.metrics.get("generated_rows", len(self.items))
                row.append(f"{s.metrics.get('generated_agree', 0)}/{done}" if likely
                           else f"{s.metrics.get('unparsed', 0)}/{len(self.items)}")
            if gains:
                gain = gains.get(s.name, {}).get(self.primary)
                row.append(cell(gain.estimate, gain, signed=True) if gain else "")
            rows.append([*row, f"{s.seconds:.0f}"])
        return header, rows

    def table(self) -> str:
        """The comparison as a text table: scores and gains with their intervals."""
        return text_table(*self.cells())

    def verdict(self) -> str:
        """One sentence: the fine-tuned model against the best baseline, or the best of the models compared."""
        metric, what = self.primary, self.primary.replace("_", " ")
        gains = (self.intervals or {}).get("gains", {})
        if self.tuned is not None and gains:
            return gain_verdict(self.baselines(), gains, metric, what, self.tuned)
        if not self.baselines():
            return ""
        best = max(self.baselines(), key=lambda s: s.metrics.get(metric) or 0.0)
        interval = (self.intervals or {}).get("systems", {}).get(best.name, {}).get(metric)
        return f"Best {what}: {best.name}, {best.metrics[metric]:.3f}" + (
            f" [{interval.low:.3f}, {interval.high:.3f}]." if interval else ".")


LABEL_ANSWER_TOKENS = 32  # room for "The sentiment of this review is positive." before a label


def answer_budget(tokenizer: Any, labels: list[str] | tuple[str, ...] | None, free_text: int) -> int:
    """Longest answer to generate: for a label task enough for a base model to say its label in a
    sentence (32 tokens, or the longest label + 8), since a reply cut before its label would count as
    unparsed and make the baseline look worse than it is; generation also stops at the end of the
    first line (`stop_at_newline`). A fine-tuned model stops at its end-of-turn token right after
    the label, so it costs nothing there. Free-text tasks: `free_text`."""
    if not labels:
        return free_text
    longest = max(len(tokenizer(label, add_special_tokens=False)["input_ids"]) for label in labels)
    return max(LABEL_ANSWER_TOKENS, longest + 8)


def evaluate_system(loaded: LoadedModel, name: str, prompts: list, items: list[EvalItem], labels: list[str] | None,
                    settings: EvalConfig, *, with_perplexity: bool = True, sample: list[int] | None = None) -> SystemResult:
    """Answers of one model to `prompts`, scored against the items' references. Label tasks under
    scoring=likelihood: scored by the most likely label, answers generated for the rows of `sample`
    only (every row when None)."""
    if not labels:
        with Stage(f"evaluating {name}", len(prompts)) as stage:
            generated = generate(loaded, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                                 progress=stage.advance)
        result = SystemResult(name, loaded.name, list(generated.texts), text_metrics([i.reference for i in items], generated.texts),
                              generated.seconds, generated.new_tokens)
        if with_perplexity:
            result.metrics["reference_ppl"] = perplexity(reference_loss(loaded, items))
        result.metrics["tokens_per_s"] = generated.new_tokens / max(generated.seconds, 1e-9)
        return result
    rows = list(range(len(prompts))) if settings.scoring != "likelihood" or sample is None else sorted(sample)
    likelihood = settings.scoring != "generate"
    with Stage(f"evaluating {name}", len(rows) + (len(prompts) if likelihood else 0)) as stage:
        generated = generate(loaded, [prompts[i] for i in rows], max_new_tokens=answer_budget(loaded.tokenizer, labels, 0),
                             batch_size=settings.batch_size, stop_at_newline=True, progress=stage.advance)
        scored = (score_labels(loaded, prompts, list(labels), batch_size=settings.batch_size, progress=stage.advance)
                  if likelihood else None)
    answers: list[str | None] = [None] * len(prompts)
    for row, text in zip(rows, generated.texts):
        answers[row] = text
    result = SystemResult(name, loaded.name, answers, {}, generated.seconds, generated.new_tokens)
    mapped = {row: map_answer_to_label(text, labels) for row, text in zip(rows, generated.texts)}
    gold = [item.label for item in items]
    by_answer = [mapped[row][0] for row in range(len(prompts))] if len(rows) == len(prompts) else None
    result.rules = [mapped[row][1] if row in mapped else "not generated" for row in range(len(prompts))]
    result.likelihood = scored.predicted(normalized=settings.length_normalized) if scored else None
    result.predicted = result.likelihood if settings.scoring == "likelihood" else by_answer
    metrics = label_metrics(gold, result.predicted, labels)
    used = [mapped[row][1] for row in rows]
    metrics.rules = {rule: used.count(rule) for rule in dict.fromkeys(used)}
    result.metrics = metrics.as_dict()
    result.metrics["unparsed"] = sum(1 for label, _ in mapped.values() if label is None)
    if settings.scoring == "likelihood":
        result.metrics.update({"generated_rows": len(rows),
                               "generated_agree": sum(mapped[row][0] == result.likelihood[row] for row in rows)})
        if by_answer is not None:
            result.metrics["generated_accuracy"] = label_metrics(gold, by_answer, labels).accuracy
    elif scored is not None:
        by_likelihood = label_metrics(gold, result.likelihood, labels)
        result.metrics.update({"likelihood_accuracy": by_likelihood.accuracy, "likelihood_macro_f1": by_likelihood.macro["f1"]})
    if scored is not None:
        result.metrics["likelihood_seconds"] = scored.seconds
        result.seconds += scored.seconds
    result.metrics["tokens_per_s"] = generated.new_tokens / max(generated.seconds, 1e-9)
    return result


def generate_sample(rows: int, settings: EvalConfig, seed: int) -> list[int] | None:
    """The seeded rows a baseline generates answers for under scoring=likelihood (None: every row)."""
    if settings.scoring != "likelihood" or settings.generate_sample >= rows:
        return None
    import random

    return sorted(random.Random(f"{seed}-generate").sample(range(rows), settings.generate_sample))


def run_comparison(run_dir: Path, items: list[EvalItem], pool: list[EvalItem], settings: EvalConfig,
                   labels: list[str] | None, seed: int = 0, share: Share = ALONE) -> Comparison:
    """Evaluate base zero-shot, base k-shot and the fine-tuned model of `run_dir` on `items`, each
    model's decoding shared out over `share`'s processes."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    comparison = Comparison("label" if labels else "generation", items, [], labels, settings.few_shot, settings.few_shot_selection,
                            scoring=settings.scoring)
    general = _general_texts(settings)
    zero_shot = [item.prompt for item in items]
    sample = generate_sample(len(items), settings, seed)  # scoring=likelihood: the rows baselines also generate

    retrieved = None
    if settings.rag.corpus:
        from tunesmith.eval.rag import build_index, retrieve

        index, inputs = build_index(settings.rag, pool)
        retrieved = retrieve(items, index, inputs, settings.rag.k)
        comparison.notes.append(f"RAG systems: the {settings.rag.k} best chunks of {settings.rag.corpus} by "
                                f"{'BM25' if settings.rag.retriever == 'bm25' else 'dense MiniLM embeddings'} "
                                "before each question" + _recall_note(items, retrieved.sources))

    tuned = load_for_generation(str(run_dir), precision=settings.precision, share=share)
    template = tuned.tokenizer.chat_template
    tuned_result = evaluate_system(tuned, "fine-tuned", zero_shot, items, labels, settings)
    tuned_rag = None
    if retrieved is not None and settings.rag_systems == "both":
        tuned_rag = evaluate_system(tuned, "fine-tuned + RAG", retrieved.prompts, items, labels, settings,
                                    with_perplexity=False, sample=sample)
    general_after = text_loss(tuned, general) if general else None
    del tuned
    gc.collect()

    base = load_for_generation(manifest["base_model"]["spec"], chat_template=template, precision=settings.precision,
                               share=share)
    comparison.systems.append(evaluate_system(base, "base zero-shot", zero_shot, items, labels, settings, sample=sample))
    if settings.few_shot and pool:
        index = TfidfIndex([p.key for p in pool]) if settings.few_shot_selection == "similar" else None
        prompts = [few_shot_prompt(item, select_shots(item, n, pool, settings.few_shot, settings.few_shot_selection, seed, index))
                   for n, item in enumerate(items)]
        comparison.systems.append(evaluate_system(base, f"base {settings.few_shot}-shot", prompts, items, labels, settings,
                                                  with_perplexity=False, sample=sample))
    if retrieved is not None:
        comparison.systems.append(evaluate_system(base, "base + RAG", retrieved.prompts, items, labels, settings,
                                                  with_perplexity=False, sample=sample))
    if general:
        comparison.forgetting = _forgetting(settings, len(general), text_loss(base, general), general_after)
    comparison.systems.append(tuned_result)
    if tuned_rag is not None:
        comparison.systems.append(tuned_rag)
    add_intervals(comparison, settings.resamples, seed)
    return comparison


def _recall_note(items: list[EvalItem], sources: list[list[str]]) -> str:
    """recall@k when the rows name the document their answer comes from (a `source` field)."""
    from tunesmith.models.retrieval import recall_at_k

    wanted = [getattr(item, "source", None) for item in items]
    recall = recall_at_k([[s.rsplit("/", 1)[-1] for s in found] for found in sources],
                         [w.rsplit("/", 1)[-1] if w else None for w in wanted])
    return "" if recall is None else f"; retrieval recall@k {recall:.3f} (rows whose source document was retrieved)"


def add_intervals(comparison: Comparison, resamples: int, seed: int = 0) -> None:
    """Paired bootstrap intervals over the rows for every system's score and every gain."""
    if comparison.kind == "label":
        references = [item.label for item in comparison.items]
        answers = {s.name: s.predicted for s in comparison.systems}
    else:
        references = [item.reference for item in comparison.items]
        answers = {s.name: s.answers for s in comparison.systems}
    comparison.intervals = system_intervals(comparison.labels, references, answers, comparison.tuned,
                                            resamples=resamples, seed=seed)
    if comparison.kind == "label" and comparison.scoring == "both" and all(s.likelihood is not None for s in comparison.systems):
        scored = system_intervals(comparison.labels, references, {s.name: s.likelihood for s in comparison.systems},
                                  comparison.tuned, resamples=resamples, seed=seed)
        for part, values in scored.items():
            for name, metrics in values.items():
                comparison.intervals[part].setdefault(name, {}).update(
                    {f"likelihood_{metric}": interval for metric, interval in metrics.items()})


def general_text_forgetting(run_dir: Path, settings: EvalConfig) -> dict[str, Any]:
    """Perplexity of general text under the base model and under the run's model."""
    general = _general_texts(settings)
    tuned = load_for_generation(str(run_dir), precision=settings.precision)
    after = text_loss(tuned, general)
    del tuned
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    before = text_loss(load_for_generation(manifest["base_model"]["spec"], precision=settings.precision), general)
    return _forgetting(settings, len(general), before, after)


def _forgetting(settings: EvalConfig, documents: int, loss_before: float, loss_after: float) -> dict[str, Any]:
    before, after = perplexity(loss_before), perplexity(loss_after)
    return {"source": settings.general_text, "documents": documents, "ppl_before": before, "ppl_after": after,
            "ratio": after / before}


def save_comparison(comparison: Comparison, folder: Path) -> None:
    """predictions.jsonl (every row, every system) and comparison.json (the metrics)."""
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "predictions.jsonl", "w", encoding="utf-8") as handle:
        for number, item in enumerate(comparison.items):
            row = {"where": item.where, "input": item.key, "reference": item.reference}
            for system in comparison.systems:
                if system.answers[number] is not None:
                    row[system.name] = system.answers[number]
                if system.predicted is not None:
                    row[f"{system.name} label"] = system.predicted[number]
                if system.likelihood is not None:
                    row[f"{system.name} most likely label"] = system.likelihood[number]
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    summary = {"kind": comparison.kind, "rows": len(comparison.items), "labels": comparison.labels,
               "few_shot": comparison.few_shot, "few_shot_selection": comparison.selection,
               "systems": {s.name: {"model": s.model, "seconds": s.seconds, "new_tokens": s.new_tokens, **s.metrics}
                           for s in comparison.systems},
               "forgetting": comparison.forgetting, "notes": comparison.notes,
               "intervals": None if not comparison.intervals else {
                   part: {name: {metric: interval.as_dict() for metric, interval in metrics.items()}
                          for name, metrics in values.items()} for part, values in comparison.intervals.items()}}
    (folder / "comparison.json").write_text(json.dumps(summary, indent=1))


def disagreements(comparison: Comparison, limit: int = 10) -> list[dict[str, str]]:
    """Rows where the systems' answers differ (by label for label tasks), the fine-tuned one right first."""
    rows = []
    tuned = next((s for s in comparison.systems if s.name == comparison.tuned), comparison.systems[-1])
    for number, item in enumerate(comparison.items):
        if comparison.kind == "label":
            values = [s.predicted[number] for s in comparison.systems]
            tuned_right = tuned.predicted[number] == item.label
        else:
            values = [(s.answers[number] or "").strip() for s in comparison.systems]
            tuned_right = (tuned.answers[number] or "").strip() == item.reference.strip()
        if len(set(values)) > 1:
            rows.append((not tuned_right, number))
    return [{"where": comparison.items[n].where, "input": comparison.items[n].key, "reference": comparison.items[n].reference,
             **{s.name: _shown_answer(s, n) for s in comparison.systems}} for _, n in sorted(rows)[:limit]]


def _shown_answer(system: SystemResult, row: int) -> str:
    """The generated answer, or under scoring=likelihood the most likely label where none was generated."""
    if system.answers[row] is not None:
        return system.answers[row]
    return f"(most likely: {system.likelihood[row]})" if system.likelihood is not None else ""


def _general_texts(settings: EvalConfig) -> list[str]:
    if not settings.general_text:
        return []
    records = read_records(resolve_data_path(settings.general_text))
    return [r.data["text"] for r in records if r.data and isinstance(r.data.get("text"), str)][:settings.general_rows]


def result_dict(result: SystemResult) -> dict[str, Any]:
    return asdict(result)
