"""One trainer per run folder, even when a job's worker stalls.

A fine-tuning job's worker holds a lease in the store; a worker that stops heartbeating (dead, or
only stalled: swapped out, stopped, cut off from the store) loses the job to another, which starts
its own training process on the same run folder. A dead worker's training dies with it; a stalled
worker's does not, and went on writing checkpoints and metrics into the folder the new one resumes
from (or, with no checkpoint yet, deletes and recreates).

So the worker writes its lease's token into the job's lease file before it starts a training
process, and hands the process that token (TUNESMITH_RUN_FENCE=<lease file>=<token>). The process
checks the token before every write into the run folder (`check`): once another worker's token is
there, it stops without writing. And it holds an exclusive lock on the run folder for its whole life
(`holding_run`): the new trainer waits for the old one to have stopped before it reads or writes
anything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from tunesmith.errors import RunError

VARIABLE = "TUNESMITH_RUN_FENCE"


class FencedOut(RunError):
    """Another worker holds this run's job now: this process must not write into the run folder."""


@dataclass(frozen=True)
class Fence:
    lease_file: Path
    token: str

    @property
    def lock_file(self) -> Path:
        return self.lease_file.with_name(self.lease_file.name + ".lock")

    def environment(self) -> dict[str, str]:
        return {VARIABLE: f"{self.lease_file}={self.token}"}


def current() -> Fence | None:
    """This process's fence (set by a job's worker); None for a run started by hand."""
    value = os.environ.get(VARIABLE)
    if not value:
        return None
    lease_file, _, token = value.rpartition("=")
    return Fence(Path(lease_file), token)


def check() -> None:
    """FencedOut when another worker has taken this process's job over (a cheap read of one small
    file: called before each write into the run folder)."""
    fence = current()
    if fence is None:
        return
    try:
        holder = fence.lease_file.read_text().strip()
    except OSError:
        holder = None
    if holder != fence.token:
        raise FencedOut(f"the job of this run was taken over by another worker ({holder or 'no lease'}); "
                        "this training stops without writing into the run folder")


@contextlib.contextmanager
def holding_run() -> Iterator[None]:
    """Hold the run folder's lock for the block (a job's training process; a run started by hand,
    or a rank other than the first, has nothing to hold): wait while an earlier trainer of the same
    job still runs, then check that this process still holds the job."""
    fence = current()
    if fence is None or int(os.environ.get("RANK", "0")) != 0:
        yield
        return
    import fcntl

    with open(fence.lock_file, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("waiting for the run folder: an earlier training of this job is still stopping", file=sys.stderr,
                  flush=True)
            fcntl.flock(lock, fcntl.LOCK_EX)
        check()
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
