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
from tunesmith.models.generate import LoadedModel, generate, load_for_generation
from tunesmith.models.processes import ALONE, Share
from tunesmith.models.score import score_labels
from tunesmith.training.metrics import perplexity


@dataclass
class SystemResult:
    name: str
    model: str
    answers: list[str]
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

    def interval_lines(self) -> list[str]:
        """Each gain of the fine-tuned model, with its 95% interval, in words."""
        if not self.intervals:
            return []
        lines = []
        if self.tuned is None:
            for name, metrics in self.intervals["systems"].items():
                lines += [f"{name}: {metric.replace('_', ' ')} {interval.estimate:.3f} "
                          f"[{interval.low:.3f}, {interval.high:.3f}]" for metric, interval in metrics.items()]
            return lines
        for base, metrics in self.intervals["gains"].items():
            for metric, interval in metrics.items():
                lines.append(interval.verdict(f"the {metric.replace('_', ' ')} gain of {self.tuned} over {base}"))
        return lines

    @property
    def headline(self) -> list[str]:
        if self.kind == "label":
            scored = any(s.likelihood is not None for s in self.systems)
            return ["accuracy", "macro_f1", *(["likelihood_accuracy", "likelihood_macro_f1"] if scored else [])]
        return ["exact_match", "normalized_exact_match", "contains_answer", "rouge_l", "reference_ppl"]

    def system(self, name: str) -> SystemResult:
        return next(s for s in self.systems if s.name == name)

    def table(self) -> str:
        """The comparison as a text table, with the fine-tuned model's gain over each baseline."""
        unparsed = self.kind == "label"  # shown beside accuracy: an answer no label matched counts as wrong
        names = ["system", *self.headline, *(["unparsed"] if unparsed else []), "seconds"]
        rows = [[s.name, *(_format(s.metrics.get(m)) for m in self.headline),
                 *([f"{s.metrics.get('unparsed', 0)}/{len(self.items)}"] if unparsed else []), f"{s.seconds:.0f}"]
                for s in self.systems]
        tuned = next((s for s in self.systems if s.name == self.tuned), None)
        for base in [s for s in self.systems if tuned is not None and s is not tuned]:
            rows.append([f"gain over {base.name}", *(_format(_delta(tuned, base, m), signed=True) for m in self.headline),
                         *([""] if unparsed else []), ""])
        widths = [max(len(str(row[i])) for row in [names, *rows]) for i in range(len(names))]
        lines = ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w) for i, (cell, w) in enumerate(zip(row, widths)))
                 for row in [names, *rows]]
        return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


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
                    settings: EvalConfig, *, with_perplexity: bool = True) -> SystemResult:
    """Answers of one model to `prompts`, scored against the items' references."""
    max_new = answer_budget(loaded.tokenizer, labels, settings.max_new_tokens)
    generated = generate(loaded, prompts, max_new_tokens=max_new, batch_size=settings.batch_size,
                         stop_at_newline=bool(labels))
    result = SystemResult(name, loaded.name, generated.texts, {}, generated.seconds, generated.new_tokens)
    if labels:
        mapped = [map_answer_to_label(answer, labels) for answer in generated.texts]
        result.predicted, result.rules = [m[0] for m in mapped], [m[1] for m in mapped]
        metrics = label_metrics([item.label for item in items], result.predicted, labels)
        metrics.rules = {rule: result.rules.count(rule) for rule in dict.fromkeys(result.rules)}
        result.metrics = metrics.as_dict()
        if settings.scoring != "generate":  # what the model knows, whatever the format of its answer
            scored = score_labels(loaded, prompts, list(labels), batch_size=settings.batch_size)
            result.likelihood = scored.predicted(normalized=settings.length_normalized)
            by_likelihood = label_metrics([item.label for item in items], result.likelihood, labels)
            result.metrics.update({"likelihood_accuracy": by_likelihood.accuracy,
                                   "likelihood_macro_f1": by_likelihood.macro["f1"],
                                   "likelihood_seconds": scored.seconds})
    else:
        result.metrics = text_metrics([item.reference for item in items], generated.texts)
        if with_perplexity:
            result.metrics["reference_ppl"] = perplexity(reference_loss(loaded, items))
    result.metrics["tokens_per_s"] = generated.new_tokens / max(generated.seconds, 1e-9)
    return result


def run_comparison(run_dir: Path, items: list[EvalItem], pool: list[EvalItem], settings: EvalConfig,
                   labels: list[str] | None, seed: int = 0, say: Any = print, share: Share = ALONE) -> Comparison:
    """Evaluate base zero-shot, base k-shot and the fine-tuned model of `run_dir` on `items`, each
    model's decoding shared out over `share`'s processes."""
    manifest = json.loads((Path(run_dir) / "manifest.json").read_text())
    comparison = Comparison("label" if labels else "generation", items, [], labels, settings.few_shot, settings.few_shot_selection)
    general = _general_texts(settings)
    zero_shot = [item.prompt for item in items]

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
    say(f"evaluating the fine-tuned model on {len(items)} rows")
    tuned_result = evaluate_system(tuned, "fine-tuned", zero_shot, items, labels, settings)
    tuned_rag = None
    if retrieved is not None:
        say(f"evaluating the fine-tuned model with retrieval on {len(items)} rows")
        tuned_rag = evaluate_system(tuned, "fine-tuned + RAG", retrieved.prompts, items, labels, settings,
                                    with_perplexity=False)
    general_after = text_loss(tuned, general) if general else None
    del tuned
    gc.collect()

    base = load_for_generation(manifest["base_model"]["spec"], chat_template=template, precision=settings.precision,
                               share=share)
    say(f"evaluating the base model zero-shot on {len(items)} rows")
    comparison.systems.append(evaluate_system(base, "base zero-shot", zero_shot, items, labels, settings))
    if settings.few_shot and pool:
        index = TfidfIndex([p.key for p in pool]) if settings.few_shot_selection == "similar" else None
        prompts = [few_shot_prompt(item, select_shots(item, n, pool, settings.few_shot, settings.few_shot_selection, seed, index))
                   for n, item in enumerate(items)]
        say(f"evaluating the base model {settings.few_shot}-shot on {len(items)} rows")
        comparison.systems.append(evaluate_system(base, f"base {settings.few_shot}-shot", prompts, items, labels, settings,
                                                  with_perplexity=False))
    if retrieved is not None:
        say(f"evaluating the base model with retrieval on {len(items)} rows")
        comparison.systems.append(evaluate_system(base, "base + RAG", retrieved.prompts, items, labels, settings,
                                                  with_perplexity=False))
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
    if comparison.kind == "label" and all(s.likelihood is not None for s in comparison.systems):
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
            values = [s.answers[number].strip() for s in comparison.systems]
            tuned_right = tuned.answers[number].strip() == item.reference.strip()
        if len(set(values)) > 1:
            rows.append((not tuned_right, number))
    return [{"where": comparison.items[n].where, "input": comparison.items[n].key, "reference": comparison.items[n].reference,
             **{s.name: s.answers[n] for s in comparison.systems}} for _, n in sorted(rows)[:limit]]


def _general_texts(settings: EvalConfig) -> list[str]:
    if not settings.general_text:
        return []
    records = read_records(resolve_data_path(settings.general_text))
    return [r.data["text"] for r in records if r.data and isinstance(r.data.get("text"), str)][:settings.general_rows]


def _delta(tuned: SystemResult, base: SystemResult, metric: str) -> float | None:
    a, b = tuned.metrics.get(metric), base.metrics.get(metric)
    return None if a is None or b is None else a - b


def _format(value: float | None, signed: bool = False) -> str:
    if value is None:
        return "-"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def result_dict(result: SystemResult) -> dict[str, Any]:
    return asdict(result)
