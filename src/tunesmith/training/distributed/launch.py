"""`tunesmith train --nproc N`: the same command in N processes on this machine, started by
torchrun's elastic agent (torch.distributed.run), which also sets each one's RANK and WORLD_SIZE.

Rank 0 prints to the terminal as a single process would; the other ranks' output goes to log
files, since it would only repeat rank 0's (a rank that fails without its one line, under --debug
or in a crash, has its log printed). When a rank fails, its error is printed as one line
naming it: each rank writes its one-line error to the file torchrun names in
TORCHELASTIC_ERROR_FILE, with the time in nanoseconds (torchrun's own timestamp counts whole
seconds), and the first to fail is reported, not the others that then lost contact with it.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

LAUNCHED = "TUNESMITH_LAUNCHED"  # set for the ranks of --nproc: the launcher's process id; it reports their errors
_NANOSECONDS = "tunesmith_failed_ns"


def launch(nproc: int, argv: list[str]) -> int:
    """Run `tunesmith ARGV` in `nproc` processes; returns the exit status for the user."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import get_args_parser, run

    # torchrun would set 1 thread per process and say so; share this machine's cores out instead.
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED] = str(os.getpid())  # torchrun's agent runs in this process: the ranks' parent
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)  # its failure report is ours to give
    with tempfile.TemporaryDirectory(prefix="tunesmith-ranks-") as logs:
        quiet = ",".join(f"{rank}:3" for rank in range(1, nproc))  # 3: stdout and stderr to files
        options = ["--standalone", "--nproc-per-node", str(nproc), "--log-dir", logs] + (["--redirects", quiet] if quiet else [])
        try:
            run(get_args_parser().parse_args([*options, "-m", "tunesmith.cli", *argv]))
        except ChildFailedError as failed:
            rank, failure = min(failed.failures.items(), key=lambda item: (*_failed_at(item[1]), item[0]))
            if failure.exitcode < 0:
                print(f"error: rank {rank} was stopped by {failure.signal_name()} (out of memory, or killed); "
                      "the other ranks stopped with it", file=sys.stderr)
                return 1
            if isinstance(failure.message, str) and failure.message.startswith("rank "):  # its own one line
                print(f"error: {failure.message}", file=sys.stderr)
                return failure.exitcode
            if failure.local_rank != 0:  # a trace (--debug) or a crash: its output went to a log file
                for log in Path(logs).glob(f"**/{failure.local_rank}/stderr.log"):
                    sys.stderr.write(log.read_text(errors="replace")[-20000:])
            print(f"error: rank {rank} failed with exit status {failure.exitcode}", file=sys.stderr)
            return failure.exitcode
    return 0


def _failed_at(failure: Any) -> tuple[int, float]:
    """(0, when it failed in nanoseconds) for a rank that wrote its error; (1, torchrun's second)
    for one that wrote none (a crash, or a signal): such a rank is reported only when no rank said
    why; (2, ...) for one stopped by SIGTERM, which the agent sends the survivors of a failure (their
    times, in whole seconds, often tie with the rank that failed, which would hide it behind rank 0)."""
    data = failure.error_file_data if isinstance(failure.error_file_data, dict) else {}
    if _NANOSECONDS in data:
        return 0, data[_NANOSECONDS]
    return (2 if failure.exitcode == -signal.SIGTERM else 1), failure.timestamp * 1e9


def report_rank_error(line: str) -> bool:
    """Record a rank's one-line error for the launcher; True when the launcher will print it (so
    the rank itself should not: the user gets one line, from the rank that failed first)."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        try:
            with open(path, "w", encoding="utf-8") as handle:
                json.dump({"message": line, "timestamp": int(time.time()), _NANOSECONDS: time.time_ns()}, handle)
        except OSError:
            return False
    return bool(path) and bool(os.environ.get(LAUNCHED))


def stop_with_launcher() -> None:
    """In a rank of --nproc: stop (SIGTERM) when the launcher dies, on Linux (PR_SET_PDEATHSIG).
    Without it, a launcher killed by SIGKILL, which can stop nothing, leaves its ranks training and
    writing checkpoints into the run folder that a resumed run then shares with them."""
    launcher = os.environ.get(LAUNCHED, "")
    if not launcher.isdigit() or not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != int(launcher):  # it died before the call above
        os.kill(os.getpid(), signal.SIGTERM)
