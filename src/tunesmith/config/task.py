"""task: labelled rows as a task: the prompt, the labels, and the span tasks' answer length."""

from __future__ import annotations

from typing import Literal

from tunesmith.config.base import Section, setting


class TaskConfig(Section):
    """Labelled rows (a text and a label) as a task: how the prompt is written and which labels exist."""

    prompt_template: str | None = setting(
        None,
        "Prompt for labelled rows, with {text} and optionally {labels}. Unset: \"Classify the following "
        "text. Answer with one word: {labels}.\\n\\nText: {text}\"", job=True,
    )
    labels: list[str] | None = setting(None, "The label set. Unset: every label found in the training data.",
                                       job=True)
    label_names: dict[str, str] = setting(
        {}, "Rename raw labels for the prompt and the answers, e.g. {'1': positive, '-1': negative}.", job=True
    )
    max_answer_tokens: int = setting(
        30, "train.method=extractive-qa: the longest answer span the reader may give, in tokens (SQuAD's "
        "convention).", job=True, ge=1,
    )
    class_weights: Literal["none", "balanced"] = setting(
        "none",
        "train.method=classify: weigh each class's loss by n / (classes x n_class), for imbalanced labels.", job=True,
    )
