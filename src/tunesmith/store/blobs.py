"""Uploaded files on disk, content-addressed: the bytes of a file live once under their sha256,
however many uploads (or projects) share them. A blob is written under a temporary name, flushed
and renamed into place, so a kill leaves either no blob or the whole one.

Whether a blob is still referenced is the store's to say (store/uploads.py decides it and places or
removes the blob under one lock); this module only moves bytes."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from tunesmith.files import fsync_path

CHUNK = 1 << 20


class TooLarge(Exception):
    pass


@dataclass(frozen=True)
class Staged:
    """Bytes written and hashed, not yet in place."""

    path: Path
    sha256: str
    size: int


class Blobs:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def stage(self, source: BinaryIO, max_bytes: int) -> Staged:
        """Write the stream's bytes under a temporary name and hash them. TooLarge past `max_bytes`
        (nothing kept). The caller places or discards what it gets."""
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
        except BaseException:
            staging.unlink(missing_ok=True)
            raise
        return Staged(staging, digest.hexdigest(), size)

    def place(self, staged: Staged) -> None:
        """Put staged bytes under their hash (the same bytes already there stay) and drop the
        staging copy."""
        target = self.path(staged.sha256)
        try:
            if not target.exists():
                target.parent.mkdir(exist_ok=True)
                os.replace(staged.path, target)
                fsync_path(target.parent)
        finally:
            staged.path.unlink(missing_ok=True)

    def discard(self, staged: Staged) -> None:
        staged.path.unlink(missing_ok=True)

    def put(self, source: BinaryIO, max_bytes: int) -> tuple[str, int]:
        """Stage and place in one go, for bytes no other writer can be deleting (tests, tools)."""
        staged = self.stage(source, max_bytes)
        self.place(staged)
        return staged.sha256, staged.size

    def trash(self, sha256: str) -> Path | None:
        """Move a blob out of its place (into trash/), so a failed removal can be undone; None when
        it is not there."""
        trash_dir = self.root / "trash"
        trash_dir.mkdir(exist_ok=True)
        moved = trash_dir / f"{sha256}.{os.getpid()}.{os.urandom(4).hex()}"
        try:
            os.replace(self.path(sha256), moved)
        except FileNotFoundError:
            return None
        return moved

    def untrash(self, moved: Path, sha256: str) -> None:
        os.replace(moved, self.path(sha256))
