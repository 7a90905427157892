"""Progress of the long stages (training, each evaluated system): on a terminal a bar with its rate
and the time left (tqdm's), otherwise one line when the stage ends, so a log shows every stage
without a line per batch. Each finished stage's time is kept for the summary at the end of a run."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import Any

_FINISHED: list[tuple[str, float]] = []  # (stage, seconds), in the order the stages ended


@dataclass
class Stage:
    """One stage's progress; use as a context manager and call `advance` as work is done."""

    name: str
    total: int
    unit: str = "row"
    show: bool = True
    initial: int = 0  # work done before this process started (a resumed run's steps)

    def __enter__(self) -> Stage:
        self.started = time.perf_counter()
        self.done = self.initial
        self.summary: dict[str, Any] = {}  # the last postfix, shown in the one line of a log
        self.bar: Any = None
        if self.show and _terminal():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=self.total, initial=self.initial, desc=self.name, unit=self.unit,
                            dynamic_ncols=True, leave=True)
        return self

    def write(self, message: str) -> None:
        """A line of text that does not break the bar."""
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr, flush=True)

    def advance(self, count: int = 1, **postfix: Any) -> None:
        self.done += count
        self.summary = postfix or self.summary
        if self.bar is not None:
            if postfix:
                self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(count)

    def __exit__(self, kind: Any, error: Any, trace: Any) -> None:
        seconds = time.perf_counter() - self.started
        if self.bar is not None:
            self.bar.close()
        if kind is not None:
            return
        _FINISHED.append((self.name, seconds))
        if self.show and self.bar is None:
            rate = (self.done - self.initial) / seconds if seconds > 0 else 0.0
            print(f"tunesmith: {self.name}: {self.done} {self.unit}s in {seconds:.0f} s ({rate:.2f} {self.unit}s/s"
                  + "".join(f", {key} {value}" for key, value in self.summary.items()) + ")", file=sys.stderr, flush=True)


def _terminal() -> bool:
    return sys.stderr.isatty()


def finished_stages() -> list[tuple[str, float]]:
    """The stages finished in this process since `clear_stages`, with their seconds."""
    return list(_FINISHED)


def clear_stages() -> None:
    _FINISHED.clear()
