"""Result tables as people read them: each cell a score with its 95% interval, aligned as text."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tunesmith.eval.intervals import Interval


def cell(value: float | None, interval: Interval | None, signed: bool = False) -> str:
    """A table cell: the value and its interval, `0.690 [0.648, 0.733]` (`+0.120 [+0.075, +0.168]`)."""
    if value is None:
        return "-"
    sign = "+" if signed else ""
    text = f"{value:{sign}.3f}"
    return f"{text} [{interval.low:{sign}.3f}, {interval.high:{sign}.3f}]" if interval else text


def text_table(header: list[str], rows: list[list[str]]) -> str:
    """Columns aligned (the first to the left, the others to the right), a rule under the header."""
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    lines = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(zip(row, widths)))
             for row in [header, *rows]]
    return "\n".join([lines[0], "-" * len(lines[0]), *lines[1:]])


def gain_verdict(candidates: Sequence[Any], gains: Mapping[str, Mapping[str, Interval | None]], metric: str, what: str,
                 tuned: str | None) -> str:
    """One sentence: `tuned`'s gain in `metric` over the best of `candidates` (systems with a `name` and
    `metrics`) that it has a gain over, with its interval; "" when there is none."""
    baselines = [s for s in candidates if s.name in gains]
    if not baselines:
        return ""
    best = max(baselines, key=lambda s: s.metrics.get(metric) or 0.0)
    gain = gains[best.name].get(metric)
    if gain is None:
        return ""
    return gain.verdict(f"The {what} gain of {tuned} over the best baseline ({best.name}, {best.metrics[metric]:.3f})") + "."
