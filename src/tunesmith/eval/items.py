"""Held-out rows as evaluation items: the prompt a model answers and the reference answer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tunesmith.config import DataConfig, TaskConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Message, Problem
from tunesmith.data.pipeline import read_source
from tunesmith.data.prompting import prompt_rows
from tunesmith.data.read import read_records
from tunesmith.data.tasks import LabelTask, build_label_task, check_labels
from tunesmith.errors import DataError


@dataclass(frozen=True)
class EvalItem:
    where: str
    prompt: tuple[Message, ...]  # ends with the user turn to answer
    reference: str  # the reference answer (the label name, for label tasks)
    label: str | None  # the gold label, for label tasks
    key: str  # the task input (text to classify, or the last user message): for leakage checks and similarity
    source: str | None = None  # the document the row's answer comes from (its `source` field): for retrieval recall


def load_items(spec: str, data: DataConfig, task: LabelTask | None, task_config: TaskConfig | None = None,
               *, max_rows: int | None = None, skip_invalid: bool = False) -> tuple[list[EvalItem], LabelTask | None]:
    """Items of a data file (or named dataset); label rows use `task` (else one built from the file).
    Each prompt is the one training builds for the row (data/prompting.py), with `data.system_prompt`."""
    path = resolve_data_path(spec)
    raw = read_source(Path(path), data)
    if task is None:
        task = build_label_task(raw.examples, task_config or TaskConfig())
    examples, problems = check_labels(raw.examples, task)
    problems = raw.problems + problems
    answerable = []
    for example in examples:
        if example.kind in ("chat", "label"):
            answerable.append(example)
        else:
            problems.append(Problem(example.where, f"{example.kind} rows cannot be evaluated by generation",
                                    "use chat, instruction or labelled rows for evaluation"))
    rows, unaskable = prompt_rows(answerable, data.system_prompt, task)
    problems += unaskable
    if problems and not skip_invalid:
        raise DataError(f"{path}: {len(problems)} problems in the evaluation data:", problems)
    sources = {r.where: r.data["source"] for r in read_records(path) if r.data and isinstance(r.data.get("source"), str)}
    items = [EvalItem(row.where, row.messages, row.reference, row.label, row.key, sources.get(row.where)) for row in rows]
    return subset(items, max_rows), task


def subset(rows: list, max_rows: int | None, seed: int = 0) -> list:
    """At most `max_rows` of `rows`: a seeded sample kept in file order, not the first rows (a test
    file sorted by label would give one label only)."""
    if not max_rows or max_rows >= len(rows):
        return rows
    import random

    return [rows[i] for i in sorted(random.Random(f"{seed}-rows").sample(range(len(rows)), max_rows))]
