"""The child process that runs python graders' `grade(sample, item)` (started by python_grader.py).

Run as a script (`python -I python_worker.py MEMORY_BYTES FILE_BYTES`), importing nothing of
tunesmith: it sets its own resource limits first, then answers one JSON line per JSON line read:

    {"op": "load", "key": K, "source": S}          -> {"ok": true} or {"ok": false, "error": ...}
    {"op": "grade", "key": K, "sample": .., "item": ..} -> {"ok": true, "value": 0.5} or {"ok": false, "error": ...}

The answers go to a copy of the original stdout; stdout itself then points at stderr, so a grader
that prints cannot break the exchange.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import resource
import sys
import traceback


def main() -> None:
    memory_bytes, file_bytes = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory_bytes, memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (file_bytes, file_bytes))
    answers = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    graders: dict[str, object] = {}
    for line in sys.stdin:
        request = json.loads(line)
        try:
            answer = load(request, graders) if request["op"] == "load" else grade(request, graders)
        except MemoryError:
            answer = {"ok": False, "error": "MemoryError: the grader went past its memory limit"}
        answers.write(json.dumps(answer) + "\n")
        answers.flush()


def load(request: dict, graders: dict) -> dict:
    namespace: dict = {"__name__": "grader"}
    try:
        exec(compile(request["source"], "<grader source>", "exec"), namespace)
    except BaseException:  # noqa: BLE001 - the grader's own failure, reported to the caller
        return {"ok": False, "error": _trace()}
    if not callable(namespace.get("grade")):
        return {"ok": False, "error": "the source defines no function grade(sample, item)"}
    graders[request["key"]] = namespace["grade"]
    return {"ok": True}


def grade(request: dict, graders: dict) -> dict:
    try:
        value = graders[request["key"]](request["sample"], request["item"])
    except BaseException:  # noqa: BLE001 - SystemExit and the like too: the grader's failure, not the worker's
        return {"ok": False, "error": _trace()}
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        shown = repr(value)
        shown = shown if len(shown) <= 100 else shown[:97] + "..."
        return {"ok": False, "error": f"grade() returned {shown} ({type(value).__name__}), not a number"}
    if not math.isfinite(float(value)):
        return {"ok": False, "error": f"grade() returned {float(value)}, not a finite number"}
    return {"ok": True, "value": float(value)}


def _trace() -> str:
    """The traceback of the exception being handled, without this file's frames, cut to its end."""
    kind, error, trace = sys.exc_info()
    frames = [frame for frame in traceback.extract_tb(trace) if frame.filename != __file__]
    text = "".join(traceback.format_list(frames) + traceback.format_exception_only(kind, error))
    return text if len(text) <= 2000 else "..." + text[-1997:]


if __name__ == "__main__":
    main()
