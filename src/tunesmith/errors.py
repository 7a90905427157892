"""Errors a user can act on.

Every exception that reaches the CLI is a `TunesmithError`: its message names the input and the
fix, and the CLI prints it without a stack trace (the trace only with `--debug`).
"""

from __future__ import annotations


class TunesmithError(Exception):
    """A problem with what the user gave (a file, a setting, a model name), with the fix."""


class ConfigError(TunesmithError):
    """A setting is unknown, has the wrong type, or contradicts another."""


class ModelError(TunesmithError):
    """A model could not be found, downloaded or loaded."""


class DataError(TunesmithError):
    """One or more rows of a data file are unusable; `problems` lists every one of them."""

    def __init__(self, summary: str, problems: list | None = None) -> None:
        self.summary = summary
        self.problems = list(problems or [])
        super().__init__(self.report())

    def report(self, repeats_shown: int = 3) -> str:
        """Every problem; a problem shared by many rows is shown a few times, then its other lines."""
        lines = [self.summary]
        groups: dict[str, list] = {}
        for problem in self.problems:
            groups.setdefault(_shape(problem), []).append(problem)
        shown = set()
        for problem in self.problems:
            group = groups[_shape(problem)]
            if len(group) <= repeats_shown + 2:
                lines.append(str(problem))
            elif id(problem) in {id(p) for p in group[:repeats_shown]}:
                lines.append(str(problem))
            elif _shape(problem) not in shown:
                shown.add(_shape(problem))
                rest = group[repeats_shown:]
                places = ", ".join(str(p.where).rsplit(":", 1)[-1] for p in rest[:50])
                more = f" and {len(rest) - 50} more" if len(rest) > 50 else ""
                lines.append(f"  ... the same problem in {len(rest)} more rows (lines {places}{more})")
        return "\n".join(lines)


def _shape(problem: object) -> str:
    """A problem's text without its numbers: rows sharing a shape share a cause."""
    import re

    return re.sub(r"\d+", "N", f"{getattr(problem, 'what', problem)}; {getattr(problem, 'fix', '')}")


class RunError(TunesmithError):
    """A run folder is missing, incomplete, or clashes with what was asked."""
