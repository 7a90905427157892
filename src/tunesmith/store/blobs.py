"""Uploaded files on disk, content-addressed: the bytes of a file live once under their sha256,
however many uploads (or projects) share them. A blob is written under a temporary name, flushed
and renamed into place, so a kill leaves either no blob or the whole one."""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path
from typing import BinaryIO

from tunesmith.files import fsync_path

CHUNK = 1 << 20


class TooLarge(Exception):
    pass


class Blobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, source: BinaryIO, max_bytes: int) -> tuple[str, int]:
        """Store the stream's bytes; returns (sha256, size). TooLarge past `max_bytes` (nothing kept)."""
        digest, size = hashlib.sha256(), 0
        staging_dir = self.root / "incoming"
        staging_dir.mkdir(exist_ok=True)
        descriptor, name = tempfile.mkstemp(dir=staging_dir, suffix=".partial")
        staging = Path(name)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                while chunk := source.read(CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise TooLarge(size)
                    digest.update(chunk)
                    handle.write(chunk)
            fsync_path(staging)
            sha = digest.hexdigest()
            target = self.path(sha)
            if not target.exists():
                target.parent.mkdir(exist_ok=True)
                os.replace(staging, target)
                fsync_path(target.parent)
        finally:
            staging.unlink(missing_ok=True)
        return sha, size

    def remove(self, sha256: str) -> None:
        self.path(sha256).unlink(missing_ok=True)
