"""Text normalisation shared by answer matching, leakage checks and rewards."""

from __future__ import annotations

import re
import string

_PUNCTUATION = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """Lower case, punctuation removed, whitespace collapsed."""
    return " ".join(_PUNCTUATION.sub(" ", text.lower()).split())


def normalize_for_match(text: str) -> str:
    """SQuAD-style normalization for free-text exact match: `normalize` plus articles removed."""
    return " ".join(_ARTICLES.sub(" ", normalize(text)).split())
