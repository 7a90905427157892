"""One worker process of a study: `python -m tunesmith.tune.worker TUNE_FOLDER NUMBER`."""

from __future__ import annotations

import sys
from pathlib import Path

from tunesmith.errors import TunesmithError
from tunesmith.tune.study import run_worker


def say(message: str) -> None:
    print(f"tunesmith: {message}", flush=True)


if __name__ == "__main__":
    folder, number = Path(sys.argv[1]), int(sys.argv[2])
    try:
        run_worker(folder, number, say=say)
    except TunesmithError as exc:
        print(f"error: {exc}", flush=True)
        sys.exit(2)
