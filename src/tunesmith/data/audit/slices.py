"""Bias slices: rows grouped by the terms they mention (a YAML of group name -> terms, such as
gendered words), with each group's label rates in the data and each system's accuracy per group in
evaluation, and the gap between the best and the worst group."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import yaml

from tunesmith.errors import ConfigError


def load_groups(path: str | Path) -> dict[str, re.Pattern[str]]:
    """Group name -> one pattern matching any of its terms as whole words, case-insensitively."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such groups file; write a YAML mapping of group name -> list of terms")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc}); write group name -> list of terms") from None
    if not isinstance(raw, dict) or not raw or not all(isinstance(t, list) and t and all(isinstance(x, str) for x in t)
                                                        for t in raw.values()):
        raise ConfigError(f"{path}: write a mapping of group name -> a list of terms, e.g. women: [she, her, woman]")
    return {str(name): re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
            for name, terms in raw.items()}


def groups_of(text: str, groups: dict[str, re.Pattern[str]]) -> list[str]:
    return [name for name, pattern in groups.items() if pattern.search(text)]


def label_rates(texts: Sequence[str], labels: Sequence[str], groups: dict[str, re.Pattern[str]]) -> dict[str, dict]:
    """Per group: its rows and the share of each label among them (a group with a much lower share of
    a label than the others is a bias the model can learn)."""
    result = {}
    for name in groups:
        chosen = [label for text, label in zip(texts, labels) if groups[name].search(text)]
        counts = Counter(chosen)
        result[name] = {"rows": len(chosen), "label_rates": {label: n / len(chosen) for label, n in counts.most_common()}}
    return result


def rows_by_group(texts: Sequence[str], groups: dict[str, re.Pattern[str]]) -> dict[str, list[int]]:
    """Per group, the indices of the texts that mention one of its terms (a text can be in several)."""
    return {name: [i for i, text in enumerate(texts) if pattern.search(text)] for name, pattern in groups.items()}


def accuracy_by_group(texts: Sequence[str], gold: Sequence[str], predicted: Sequence[str | None],
                      groups: dict[str, re.Pattern[str]]) -> dict:
    """Accuracy per group and the gap between the best and the worst group with rows."""
    per_group = {}
    for name, pattern in groups.items():
        rows = [g == p for text, g, p in zip(texts, gold, predicted) if pattern.search(text)]
        per_group[name] = {"rows": len(rows), "accuracy": sum(rows) / len(rows) if rows else None}
    scored = [g["accuracy"] for g in per_group.values() if g["accuracy"] is not None]
    return {"groups": per_group, "gap": max(scored) - min(scored) if len(scored) > 1 else None}
