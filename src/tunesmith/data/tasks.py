"""Labelled rows as a generative task: a prompt template turns (text, label) into a chat example.

The same template renders the prompts for training, for the zero-/few-shot baselines, for
evaluation and for prediction (data/prompting.py puts them together), and it is saved with the run
(task.json) so that they can never disagree.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from tunesmith.config import TaskConfig
from tunesmith.data.examples import Example, Message, Problem
from tunesmith.errors import ConfigError
from tunesmith.files import write_atomic

DEFAULT_LABEL_PROMPT = "Classify the following text. Answer with one word: {labels}.\n\nText: {text}"
_FIELD = re.compile(r"\{(text|labels)\}")


@dataclass(frozen=True)
class LabelTask:
    labels: tuple[str, ...]
    prompt_template: str
    label_names: tuple[tuple[str, str], ...] = ()  # raw value in the data -> label shown to the model

    def name_of(self, raw_label: str) -> str:
        return dict(self.label_names).get(raw_label, raw_label)

    def prompt(self, text: str) -> str:
        """The template with {text} and {labels} filled in, in one pass; every other brace is the
        user's own text (a template asking for JSON output stays as written)."""
        listed = " or ".join([", ".join(self.labels[:-1]), self.labels[-1]]) if len(self.labels) > 1 else self.labels[0]
        values = {"text": text, "labels": listed}
        return _FIELD.sub(lambda match: values[match.group(1)], self.prompt_template)

    def to_chat(self, example: Example) -> Example:
        """The label row as the question and its label as the reply; text and label stay on it (for
        evaluation's gold label and its leakage checks)."""
        label = self.name_of(example.label)
        messages = (Message("user", self.prompt(example.text)), Message("assistant", label))
        return replace(example, kind="chat", messages=messages, label=label)

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps({"type": "label", **asdict(self)}, indent=1))

    @classmethod
    def load(cls, path: Path) -> LabelTask | None:
        if not path.is_file():
            return None
        raw = json.loads(path.read_text())
        return cls(tuple(raw["labels"]), raw["prompt_template"], tuple(tuple(p) for p in raw.get("label_names", ())))


def build_label_task(examples: list[Example], task: TaskConfig) -> LabelTask | None:
    """The task of labelled training examples (None when there are none)."""
    raw_labels = [e.label for e in examples if e.kind == "label"]
    if not raw_labels:
        return None
    template = task.prompt_template or DEFAULT_LABEL_PROMPT
    if "{text}" not in template:
        raise ConfigError("task.prompt_template must contain {text} (and may contain {labels})")
    names = dict(task.label_names)
    labels = tuple(task.labels) if task.labels else tuple(sorted({names.get(v, v) for v in raw_labels}))
    if len(labels) < 2:
        raise ConfigError(f"the training data has only one label ({labels[0]!r}); a label task needs at least two")
    return LabelTask(labels, template, tuple(sorted(names.items())))


def check_labels(examples: list[Example], task: LabelTask | None) -> tuple[list[Example], list[Problem]]:
    """The examples whose label (if any) is one of the task's; any other label is a problem of its row."""
    if task is None:
        return examples, []
    kept, problems = [], []
    for example in examples:
        name = task.name_of(example.label)
        if example.kind == "label" and name not in task.labels:
            problems.append(Problem(example.where, f"label {name!r} is not one of the task's labels ({', '.join(task.labels)})",
                                    "fix the label, or list it in task.labels"))
            continue
        kept.append(example)
    return kept, problems
