"""Bias slices: rows grouped by the terms they mention (a YAML of group name -> terms, such as
gendered words), with each group's label rates in the data; evaluation scores each group's rows
(eval/metrics.metrics_by_group)."""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from tunesmith.config import read_yaml
from tunesmith.errors import ConfigError


def load_groups(path: str | Path) -> dict[str, re.Pattern[str]]:
    """Group name -> one pattern matching any of its terms as whole words, case-insensitively."""
    path = Path(path)
    raw = read_yaml(path, "no such groups file; write a YAML mapping of group name -> list of terms")
    if not isinstance(raw, dict) or not raw or not all(isinstance(t, list) and t and all(isinstance(x, str) for x in t)
                                                        for t in raw.values()):
        raise ConfigError(f"{path}: write a mapping of group name -> a list of terms, e.g. women: [she, her, woman]")
    return {str(name): re.compile(r"\b(?:" + "|".join(re.escape(t) for t in terms) + r")\b", re.IGNORECASE)
            for name, terms in raw.items()}


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
