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

    def report(self) -> str:
        lines = [self.summary]
        lines.extend(str(problem) for problem in self.problems)
        return "\n".join(lines)


class RunError(TunesmithError):
    """A run folder is missing, incomplete, or clashes with what was asked."""
