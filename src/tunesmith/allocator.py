"""The memory allocator of a training process on Linux: tcmalloc where it is installed.

PyTorch's CPU tensors come from the C library's malloc. glibc's keeps what a step frees in its heap
(its mmap threshold rises to 32 MB after the first large free, so most activations are carved out of
the heap, whose freed middle is never returned) and the resident memory climbs through a step well
past what is alive. Measured on SmolLM2-135M, LoRA, fp32, one step of 4 rows of 1024 tokens on 2
cores (2026-12-02): glibc peaked at 10.9 GB where 6.2 GB was alive (the projection of
training/memory.py, and what tcmalloc peaked at), and took 43 s where tcmalloc took 34 s. glibc with
a fixed mmap threshold and jemalloc also peak at 6.2-7.3 GB, but take 58 s (every large tensor a fresh,
zeroed mapping). So the CLI's model-loading commands start again under tcmalloc when the library is
there (Debian/Ubuntu: `apt-get install libtcmalloc-minimal4`), as Intel's `ipexrun` launcher does;
an allocator cannot be swapped inside a running process. TUNESMITH_ALLOCATOR=system keeps glibc's.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SETTING = "TUNESMITH_ALLOCATOR"  # auto (tcmalloc where installed) or system
_RESTARTED = "TUNESMITH_ALLOCATOR_RESTARTED"  # set across the restart: never a second one
_NAMES = ("libtcmalloc_minimal.so.4", "libtcmalloc.so.4")
_FOLDERS = ("/usr/lib/x86_64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib")
# tcmalloc prints a line for every allocation over 1 GB (a 3B model's embedding is one): not news here
_QUIET = {"TCMALLOC_LARGE_ALLOC_REPORT_THRESHOLD": str(1 << 40)}
INSTALL_HINT = "apt-get install libtcmalloc-minimal4"


def tcmalloc_library() -> Path | None:
    """The installed tcmalloc shared library, or None."""
    for folder in _FOLDERS:
        for name in _NAMES:
            path = Path(folder) / name
            if path.is_file():
                return path
    return None


def current_allocator() -> str:
    """'tcmalloc' when this process runs under it, else 'system'."""
    try:
        with open("/proc/self/maps", encoding="utf-8", errors="replace") as maps:
            return "tcmalloc" if any("libtcmalloc" in line for line in maps) else "system"
    except OSError:
        return "system"


def restart_under_tcmalloc(argv: list[str]) -> None:
    """Replace this process with the same command (ARGV its arguments) under tcmalloc (same pid, so a
    parent waiting on it, a job worker or torchrun, sees no difference). Returns where that does not
    apply: not Linux, TUNESMITH_ALLOCATOR=system, already under tcmalloc, not installed, or restarted once."""
    if (sys.platform != "linux" or os.environ.get(SETTING, "auto") != "auto" or os.environ.get(_RESTARTED)
            or current_allocator() == "tcmalloc"):
        return
    library = tcmalloc_library()
    if library is None:
        return
    preload = os.environ.get("LD_PRELOAD", "")
    env = {**_QUIET, **os.environ, _RESTARTED: "1",
           "LD_PRELOAD": f"{library}{' ' + preload if preload else ''}"}
    sys.stdout.flush()
    sys.stderr.flush()
    # the same command line as this process's: the console script or -m, with any interpreter flags
    tail = sys.orig_argv[len(sys.orig_argv) - len(argv):]
    command = sys.orig_argv[1:] if tail == argv else ["-m", "tunesmith.cli", *argv]
    os.execve(sys.executable, [sys.executable, *command], env)
