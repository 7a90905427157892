"""The fine-tuning worker: claims jobs from the store, validates their files, and runs each training
as `tunesmith train` in a subprocess, reporting its steps and checkpoints back to the store."""

from __future__ import annotations

import os


def share_cores(environment: dict[str, str], processes: int) -> dict[str, str]:
    """The environment for one of `processes` trainings side by side on this machine (serve's
    workers, tune's trials): OMP_NUM_THREADS = its share of the cores, since torch's default of one
    thread per core in each would run N times as many threads as cores, and each far slower. A
    user's own OMP_NUM_THREADS is kept."""
    if processes <= 1 or "OMP_NUM_THREADS" in environment:
        return environment
    return {**environment, "OMP_NUM_THREADS": str(max(1, (os.cpu_count() or 1) // processes))}
