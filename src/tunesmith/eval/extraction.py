"""Span tasks scored as the field scores them, against the base model asked for the same thing:
a trained tagger's entities (entity-level F1, seqeval's definitions) and a trained reader's answers
(SQuAD's exact match and F1), beside a causal LM prompted zero- and few-shot on the same rows, its
reply parsed into the same spans and scored by the same code, with 95% paired bootstrap intervals.
So the report answers "did a trained tagger (reader) beat prompting?".
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from tunesmith.config import EvalConfig
from tunesmith.data.examples import Message
from tunesmith.data.qa import QARow
from tunesmith.data.spans import Entity, SpanRow, word_tags, words_of
from tunesmith.data.squad import exact, f1, normalize_answer, squad_scores
from tunesmith.eval.entities import entity_scores
from tunesmith.eval.fewshot import TfidfIndex, few_shot_prompt, select_shots
from tunesmith.eval.intervals import Interval, mean_gain_interval, micro_f1_intervals
from tunesmith.eval.items import EvalItem
from tunesmith.eval.tables import cell, gain_verdict, text_table
from tunesmith.files import write_atomic
from tunesmith.models.generate import LoadedModel, generate

ENTITY_PROMPT = ("Find the named entities in the text. Entity types: {types}.\nWrite each entity on its own line as "
                 "TYPE: the entity's exact words from the text. If there is none, write: none\n\nText: {text}")
ANSWER_PROMPT = ("Answer the question with the shortest span of words copied exactly from the context.{none}\n\n"
                 "Context: {context}\n\nQuestion: {question}")
NO_ANSWER = "unanswerable"


@dataclass
class SpanSystem:
    name: str
    model: str
    predictions: list[Any]  # entities: a list of entity dicts per row; answers: the answer text per row
    metrics: dict[str, Any]
    seconds: float
    replies: list[str] | None = None  # a prompted model's replies, before they were parsed


@dataclass
class SpanComparison:
    task: Literal["entities", "answers"]
    rows: list[str]  # where each row is
    systems: list[SpanSystem]
    few_shot: int = 0
    intervals: dict[str, dict[str, dict[str, Interval]]] = field(default_factory=dict)  # {"systems": .., "gains": ..}
    notes: list[str] = field(default_factory=list)
    tuned: str = "fine-tuned"

    @property
    def headline(self) -> list[str]:
        if self.task == "entities":
            return ["micro_f1", "micro_precision", "micro_recall", "macro_f1", "token_accuracy"]
        return ["exact_match", "f1", *(["no_answer_accuracy", "has_answer_f1"] if "no_answer_accuracy" in
                                       self.systems[0].metrics else [])]

    def table(self) -> str:
        """The systems side by side, each with its 95% interval, and the tuned model's gains."""
        return text_table(*self.cells())

    @property
    def primary(self) -> str:
        return "micro_f1" if self.task == "entities" else "f1"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        """One row per system: each metric with its interval, and the tuned model's gain over it."""
        gains = self.intervals.get("gains", {})
        header = ["system", *(f"{m.replace('_', ' ')} [95%]" for m in self.headline),
                  *([f"{self.tuned} gain [95%]"] if gains else []), "seconds"]
        rows = []
        for s in self.systems:
            gain = gains.get(s.name, {}).get(self.primary)
            rows.append([s.name, *(cell(s.metrics.get(m), self.intervals.get("systems", {}).get(s.name, {}).get(m))
                                   for m in self.headline),
                         *([cell(gain.estimate, gain, signed=True) if gain else ""] if gains else []), f"{s.seconds:.0f}"])
        return header, rows

    def verdict(self) -> str:
        """One sentence: the tuned model against the best baseline on the primary metric."""
        return gain_verdict(self.systems, self.intervals.get("gains", {}), self.primary, self.primary.replace("_", " "),
                            self.tuned)

    def as_dict(self) -> dict[str, Any]:
        return {"task": self.task, "rows": len(self.rows), "few_shot": self.few_shot, "notes": self.notes,
                "systems": {s.name: {"model": s.model, "seconds": round(s.seconds, 2), **s.metrics} for s in self.systems},
                "intervals": {part: {name: {m: i.as_dict() for m, i in metrics.items()} for name, metrics in by_name.items()}
                              for part, by_name in self.intervals.items()}}


def save_span_comparison(comparison: SpanComparison, folder: Path) -> None:
    """comparison.json (metrics with intervals) and predictions.jsonl (every system's answer per row)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "comparison.json", json.dumps(comparison.as_dict(), indent=1))
    lines = []
    for number, where in enumerate(comparison.rows):
        row: dict[str, Any] = {"where": where}
        for system in comparison.systems:
            row[system.name] = system.predictions[number]
            if system.replies is not None:
                row[f"{system.name} reply"] = system.replies[number]
        lines.append(json.dumps(row, ensure_ascii=False))
    write_atomic(folder / "predictions.jsonl", "\n".join(lines) + "\n")


# --- entities ---------------------------------------------------------------------------------

def entity_answer(row: SpanRow) -> str:
    """The gold entities of a row in the format the prompt asks for (a few-shot example's answer)."""
    return "\n".join(f"{e.label}: {row.text[e.start:e.end]}" for e in row.entities) or "none"


def entity_items(rows: list[SpanRow], types: list[str]) -> list[EvalItem]:
    return [EvalItem(row.where, (Message("user", ENTITY_PROMPT.format(types=", ".join(types), text=row.text)),),
                     entity_answer(row), None, row.text) for row in rows]


def parse_entities(reply: str, text: str, types: list[str]) -> tuple[Entity, ...]:
    """Entities from a prompted model's reply: lines `TYPE: words`, each found in the text on word
    boundaries (the first occurrence not already taken); lines naming no known type or words not in
    the text are left out, as a tagger that found nothing there would be scored."""
    by_name = {kind.lower(): kind for kind in types}
    words = words_of(text)
    starts, ends = {s for s, _ in words}, {e for _, e in words}
    found: list[Entity] = []
    for line in reply.splitlines():
        match = re.match(r"^[\s\-*\d.)]*([A-Za-z_]+)\s*[:\-\u2013]\s*(.+?)\s*$", line)
        if not match or match.group(1).lower() not in by_name:
            continue
        for surface in _surfaces(match.group(2)):
            span = next((o.span() for o in re.finditer(re.escape(surface), text) if o.start() in starts and o.end() in ends
                         and not any(o.start() < e.end and e.start < o.end() for e in found)), None)
            if span:
                found.append(Entity(*span, by_name[match.group(1).lower()]))
                break
    return tuple(sorted(found, key=lambda e: e.start))


def _surfaces(written: str) -> list[str]:
    """The words a reply gave for an entity, to look for in the text in this order: as written
    (without its quotes, a period after them, or a trailing comma), so "U.S." and "Inc." keep their
    period; then without a closing period, for a model that ended its line with one ("Paris.")."""
    line = written.strip().rstrip(",;").strip()
    quoted = re.fullmatch(r"([\"'`])(.+)\1\.?", line)
    as_written = (quoted.group(2) if quoted else line.strip("\"'`")).strip()
    return [surface for surface in dict.fromkeys([as_written, as_written.rstrip(".").strip()]) if surface]


def entity_metrics(rows: list[SpanRow], predicted: list[tuple[Entity, ...]]) -> tuple[dict[str, Any], np.ndarray]:
    """Entity-level scores (seqeval's) over the rows, flattened for the table, and each row's counts
    (correct, predicted, gold) for the intervals."""
    scores = entity_scores([word_tags(r.text, r.entities) for r in rows], [word_tags(r.text, p) for r, p in zip(rows, predicted)])
    counts = np.array([[len(set(r.entities) & set(p)), len(set(p)), len(set(r.entities))] for r, p in zip(rows, predicted)],
                      dtype=np.int64).reshape(-1, 3)
    metrics = {f"micro_{k}": scores["micro"][k] for k in ("precision", "recall", "f1")}
    metrics |= {"macro_f1": scores["macro"]["f1"], "token_accuracy": scores["token_accuracy"],
                "per_type": scores["per_type"], "confusion": scores["confusion"]}
    return metrics, counts


def prompted_entities(loaded: LoadedModel, name: str, rows: list[SpanRow], pool: list[SpanRow], types: list[str],
                      shots: int, settings: EvalConfig, seed: int) -> tuple[SpanSystem, np.ndarray]:
    """A causal LM asked to list the entities of each row, zero-shot or with `shots` solved training rows."""
    items = entity_items(rows, types)
    prompts = _with_shots(items, entity_items(pool, types), shots, settings, seed)
    generated = generate(loaded, prompts, max_new_tokens=min(settings.max_new_tokens, 96), batch_size=settings.batch_size)
    predicted = [parse_entities(reply, row.text, types) for reply, row in zip(generated.texts, rows)]
    metrics, counts = entity_metrics(rows, predicted)
    system = SpanSystem(name, loaded.name, [[_entity_dict(e, r.text) for e in p] for p, r in zip(predicted, rows)], metrics,
                        generated.seconds, generated.texts)
    return system, counts


def _entity_dict(entity: Entity, text: str, score: float | None = None) -> dict[str, Any]:
    found = {"start": entity.start, "end": entity.end, "label": entity.label, "text": text[entity.start:entity.end]}
    return found | ({"score": round(score, 6)} if score is not None else {})


def compare_entities(rows: list[SpanRow], tuned: tuple[str, list[list[Any]], float], prompted: list[tuple[SpanSystem, np.ndarray]],
                     settings: EvalConfig, few_shot: int) -> SpanComparison:
    """The tagger's entities (`tuned`: model name, found entities per row, seconds) beside the prompted systems."""
    model, found, seconds = tuned
    predicted = [tuple(Entity(f.start, f.end, f.label) for f in entities) for entities in found]
    metrics, counts = entity_metrics(rows, predicted)
    systems = [SpanSystem("fine-tuned", model, [[f.as_dict() for f in entities] for entities in found], metrics, seconds)]
    systems += [system for system, _ in prompted]
    comparison = SpanComparison("entities", [r.where for r in rows], systems, few_shot)
    all_counts = {"fine-tuned": counts, **{system.name: c for system, c in prompted}}
    by_system, gains = micro_f1_intervals(all_counts, "fine-tuned", resamples=settings.resamples)
    comparison.intervals = {"systems": {name: {"micro_f1": i} for name, i in by_system.items()},
                            "gains": {name: {"micro_f1": i} for name, i in gains.items()}}
    return comparison


# --- answers ----------------------------------------------------------------------------------

def answer_items(rows: list[QARow], allow_none: bool) -> list[EvalItem]:
    none = f" If the context does not contain the answer, write: {NO_ANSWER}" if allow_none else ""
    return [EvalItem(row.where, (Message("user", ANSWER_PROMPT.format(none=none, context=row.context, question=row.question)),),
                     row.answers[0].text if row.answers else NO_ANSWER, None, row.question) for row in rows]


def parse_answer(reply: str) -> str:
    """The answer in a prompted model's reply: its first line, without quotes or a closing period;
    empty when it says there is no answer."""
    line = next((part.strip() for part in reply.splitlines() if part.strip()), "")
    line = re.sub(r"^(the\s+)?answer\s*(is)?\s*:?\s*", "", line, flags=re.IGNORECASE).strip().strip("\"'`").rstrip(".").strip()
    return "" if normalize_answer(line) in (NO_ANSWER, "none") else line


def answer_metrics(rows: list[QARow], answers: list[str]) -> tuple[dict[str, Any], dict[str, list[float]]]:
    golds = [[a.text for a in row.answers] or [""] for row in rows]
    per_row = {"exact_match": [float(max(exact(g, p) for g in gold)) for gold, p in zip(golds, answers)],
               "f1": [max(f1(g, p) for g in gold) for gold, p in zip(golds, answers)]}
    return squad_scores(golds, answers), per_row


def prompted_answers(loaded: LoadedModel, name: str, rows: list[QARow], pool: list[QARow], allow_none: bool, shots: int,
                     settings: EvalConfig, seed: int) -> tuple[SpanSystem, dict[str, list[float]]]:
    """A causal LM asked to answer from the context, zero-shot or with `shots` solved training rows."""
    prompts = _with_shots(answer_items(rows, allow_none), answer_items(pool, allow_none), shots, settings, seed)
    generated = generate(loaded, prompts, max_new_tokens=min(settings.max_new_tokens, 32), batch_size=settings.batch_size,
                         stop_at_newline=True)
    answers = [parse_answer(reply) for reply in generated.texts]
    metrics, per_row = answer_metrics(rows, answers)
    return SpanSystem(name, loaded.name, answers, metrics, generated.seconds, generated.texts), per_row


def compare_answers(rows: list[QARow], tuned: tuple[str, list[Any], float],
                    prompted: list[tuple[SpanSystem, dict[str, list[float]]]], settings: EvalConfig, few_shot: int) -> SpanComparison:
    """The reader's answers (`tuned`: model name, found answers per row, seconds) beside the prompted systems."""
    model, found, seconds = tuned
    system, per_row = reader_system("fine-tuned", model, rows, found, seconds)
    systems = [system, *(s for s, _ in prompted)]
    comparison = SpanComparison("answers", [r.where for r in rows], systems, few_shot)
    scores = {"fine-tuned": per_row, **{system.name: values for system, values in prompted}}
    zero = [0.0] * len(rows)
    comparison.intervals = {
        "systems": {name: {m: mean_gain_interval(zero, v, resamples=settings.resamples) for m, v in values.items()}
                    for name, values in scores.items()},
        "gains": {name: {m: mean_gain_interval(v, per_row[m], resamples=settings.resamples) for m, v in values.items()}
                  for name, values in scores.items() if name != "fine-tuned"}}
    return comparison


def retrieved_contexts(rows: list[QARow], index: Any, k: int) -> tuple[list[QARow], float | None]:
    """The rows with their context replaced by the `k` chunks `index` retrieves for the question
    (the open setting: no context given), and recall@k of the rows' source documents."""
    from dataclasses import replace

    from tunesmith.models.retrieval import recall_at_k

    found = [index.search(row.question, k) for row in rows]
    open_rows = [replace(row, context="\n\n".join(chunk.text for chunk, _ in hits)) for row, hits in zip(rows, found)]
    # a question without an answer in its given context names that context's document, not the one
    # that answers it: left out of recall
    recall = recall_at_k([[chunk.source for chunk, _ in hits] for hits in found],
                         [row.source if row.answers else None for row in rows])
    return open_rows, recall


def reader_system(name: str, model: str, rows: list[QARow], found: list[Any], seconds: float) -> tuple[SpanSystem, dict[str, list[float]]]:
    """A reader's answers (models/reader.FoundAnswer) as a system beside the others."""
    metrics, per_row = answer_metrics(rows, [a.text for a in found])
    return SpanSystem(name, model, [a.as_dict() for a in found], metrics, seconds), per_row


def _with_shots(items: list[EvalItem], pool: list[EvalItem], shots: int, settings: EvalConfig, seed: int) -> list:
    if not shots or not pool:
        return [item.prompt for item in items]
    index = TfidfIndex([p.key for p in pool]) if settings.few_shot_selection == "similar" else None
    return [few_shot_prompt(item, select_shots(item, n, pool, shots, settings.few_shot_selection, seed, index))
            for n, item in enumerate(items)]


def timed(function: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    started = time.perf_counter()
    return function(*args, **kwargs), time.perf_counter() - started
