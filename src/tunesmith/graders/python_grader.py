"""Python graders: OpenAI's `{"type": "python", "source": "def grade(sample, item): ..."}`.

The source is code, so it runs only when the caller says it trusts it (`allow_python=True`; the CLI
and the server pass their own flag on). It runs in one child process per batch of samples (never one
per sample), `python -I` (no PYTHONPATH, no user site, not the working folder) with a bare
environment (no API keys), in an empty temporary folder, under OpenAI's limits: an address-space
limit (2 GiB) and a written-file limit (1 GiB) set by the child itself with resource.setrlimit, and a
wall-clock limit (2 minutes) per call enforced here: a grader past it is killed and its worker
restarted for the next sample. This bounds a grader's mistakes; it is not a sandbox against a
hostile one (it can read the files this user can, and reach the network), which is what the trust
flag is for.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

WORKER = Path(__file__).with_name("python_worker.py")


@dataclass(frozen=True)
class PythonLimits:
    """What one python grader call may use (OpenAI's limits by default)."""

    timeout_s: float = 120.0  # wall-clock seconds per call (and for loading the source)
    memory_mb: int = 2048  # the worker's address space
    disk_mb: int = 1024  # the largest file it may write


@dataclass(frozen=True)
class PythonResult:
    value: float | None = None
    error: str | None = None
    kind: str | None = None  # None, "runtime" (the grader failed), "timeout", "crash" (the worker died)


class PythonWorker:
    """One child process that loads each python grader's source once and grades samples with it."""

    def __init__(self, limits: PythonLimits | None = None) -> None:
        self.limits = limits or PythonLimits()
        self._process: subprocess.Popen | None = None
        self._folder: tempfile.TemporaryDirectory | None = None
        self._stderr: Any = None
        self._buffer = b""
        self._loaded: dict[str, str | None] = {}  # source key -> None (loaded) or why it did not load

    def grade(self, source: str, sample: dict[str, Any], item: dict[str, Any]) -> PythonResult:
        key = hashlib.sha256(source.encode()).hexdigest()[:16]
        self._start()  # a new worker (the first, or one after a timeout or a crash) has loaded nothing
        if key not in self._loaded:
            loaded = self._ask({"op": "load", "key": key, "source": source})
            if loaded.kind in ("timeout", "crash"):
                return loaded
            self._loaded[key] = loaded.error
        if self._loaded[key] is not None:
            return PythonResult(error=self._loaded[key], kind="runtime")
        return self._ask({"op": "grade", "key": key, "sample": sample, "item": item})

    def _ask(self, request: dict[str, Any]) -> PythonResult:
        try:
            line = json.dumps(request)
        except (TypeError, ValueError) as error:
            return PythonResult(error=f"the sample or item is not JSON ({error})", kind="runtime")
        self._start()
        deadline = time.monotonic() + self.limits.timeout_s
        try:
            self._process.stdin.write(line.encode() + b"\n")
            self._process.stdin.flush()
            answer = json.loads(self._read_line(deadline))
        except TimeoutError:
            self.close(kill=True)
            return PythonResult(error=f"the grader ran past its {self.limits.timeout_s:g} s limit and was stopped",
                                kind="timeout")
        except (OSError, EOFError, ValueError):
            return PythonResult(error=self._crash_report(), kind="crash")
        if answer["ok"]:
            return PythonResult(value=answer.get("value"))
        return PythonResult(error=answer["error"], kind="runtime")

    def _start(self) -> None:
        if self._process is not None:
            return
        self._folder = tempfile.TemporaryDirectory(prefix="tunesmith-grader-")
        self._stderr = tempfile.TemporaryFile()
        environment = {"PATH": os.environ.get("PATH", ""), "LANG": "C.UTF-8", "OMP_NUM_THREADS": "1",
                       "HOME": self._folder.name, "TMPDIR": self._folder.name}
        limits = [str(self.limits.memory_mb << 20), str(self.limits.disk_mb << 20)]
        self._process = subprocess.Popen([sys.executable, "-I", str(WORKER), *limits], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self._stderr, cwd=self._folder.name,
                                         env=environment, bufsize=0)
        self._buffer = b""
        self._loaded = {}

    def _read_line(self, deadline: float) -> bytes:
        descriptor = self._process.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([descriptor], [], [], remaining)
            if ready:
                chunk = os.read(descriptor, 1 << 16)
                if not chunk:
                    raise EOFError
                self._buffer += chunk
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line

    def _crash_report(self) -> str:
        self._process.kill()
        code = self._process.wait()
        self._stderr.seek(0)
        tail = self._stderr.read().decode("utf-8", "replace").strip()[-1000:]
        self.close()
        return f"the grader's process died ({_exit_status(code)})" + (f": {tail}" if tail else "")

    def close(self, *, kill: bool = False) -> None:
        """Stop the worker (the next grade starts a new one): it ends with its input, or is killed."""
        if self._process is not None:
            if kill:
                self._process.kill()
            self._process.stdin.close()
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
            self._process = None
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None
        if self._folder is not None:
            self._folder.cleanup()
            self._folder = None

    def __enter__(self) -> PythonWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _exit_status(code: int) -> str:
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"signal {signal.Signals(-code).name}"
    except ValueError:
        return f"signal {-code}"
