"""Writing files that a resume or a restart reads: atomically, through one helper; and filling a
cache entry one process at a time.

A file is written under a temporary name in the same folder, flushed to disk, then renamed over the
target (rename is atomic on POSIX filesystems) and the folder entry flushed too. A process killed at
any instant leaves either the old file or the new one, never a torn mix.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A temporary path next to `path`; whatever is written there replaces `path` when the block
    ends without an exception (for writers that want a file name, such as safetensors' save_file)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    descriptor, staging_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(descriptor)
    staging = Path(staging_name)
    try:
        yield staging
        fsync_path(staging)
        os.replace(staging, target)
        fsync_path(target.parent)
    finally:
        if staging.exists():
            staging.unlink()


def write_atomic(path: str | os.PathLike, content: str | bytes, *, encoding: str = "utf-8") -> Path:
    """Replace `path` with `content` atomically; returns the path."""
    data = content.encode(encoding) if isinstance(content, str) else content
    with atomic_path(path) as staging:
        staging.write_bytes(data)
    return Path(path)


def write_json_atomic(path: str | os.PathLike, value: Any, *, indent: int | None = 1) -> Path:
    return write_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False))


@contextlib.contextmanager
def filling(entry: Path, *, what: str) -> Iterator[None]:
    """Held while this process fills cache entry `entry` (a model folder, a package's files, a dataset).

    Two tunesmith processes that need the same entry at once (two runs started together on a fresh
    machine, a job worker beside the CLI) would otherwise both download it, and the second rename
    would land on the first's folder ("Directory not empty") or replace a file the first is reading.
    The second now waits, says so once, and then finds the entry filled: callers check again inside.
    The lock file (`.<name>.lock` beside the entry) stays: removing it while another process opens
    it would let a third process lock a different file. filelock, because it is what Hugging Face's
    own cache uses for the same job (an flock on POSIX, msvcrt on Windows).
    """
    from filelock import FileLock, Timeout

    entry.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(entry.parent / f".{entry.name}.lock")
    try:
        lock.acquire(timeout=1)
    except Timeout:
        print(f"tunesmith: waiting for another process to finish fetching {what}", flush=True)
        lock.acquire()
    try:
        yield
    finally:
        lock.release()


def fsync_path(path: str | os.PathLike) -> None:
    """Flush a file's (or a folder's entries') data to disk."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
