"""An uploaded file is a row in the store and bytes in the blobs; these functions change both, and
decide whether a blob is still referenced, under one lock per blob, so a delete and an upload of
the same bytes never cross: a delete removed the blob after its transaction had counted no other
reference, while an upload that had found the blob in place committed its row in between, pointing
at bytes that were then gone."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import BinaryIO

from tunesmith.store.blobs import Blobs
from tunesmith.store.db import Store
from tunesmith.store.tables import FileRow


def add_upload(store: Store, blobs: Blobs, project: str, filename: str, purpose: str, source: BinaryIO,
               max_bytes: int) -> FileRow:
    """Store the stream's bytes and a file row for them (TooLarge past `max_bytes`, nothing kept)."""
    staged = blobs.stage(source, max_bytes)
    try:
        with store.blob_references(staged.sha256) as session:
            blobs.place(staged)
            return store.add_file_row(session, project, filename, purpose, staged.size, staged.sha256)
    finally:
        blobs.discard(staged)


def delete_upload(store: Store, blobs: Blobs, project: str | None, file_id: str) -> FileRow | None:
    """Delete a file row of `project`'s; its bytes go with the last row that names them. None when
    the project has no such file."""
    row = store.get_file(project, file_id)
    if row is None:
        return None
    trashed = None
    try:
        with store.blob_references(row.sha256) as session:
            deleted = store.delete_file_row(session, project, file_id)
            if deleted is not None and not store.blob_referenced(session, row.sha256):
                trashed = blobs.trash(row.sha256)  # moved aside, removed once the row's deletion committed
    except BaseException:
        if trashed is not None:
            blobs.untrash(trashed, row.sha256)
        raise
    if trashed is not None:
        trashed.unlink(missing_ok=True)
    return deleted


def link_upload(store: Store, blobs: Blobs, row: FileRow, target: Path) -> bool:
    """Give a job its own link to a file's bytes (a later delete of the upload leaves them to the
    job); False when the file was deleted since the row was read."""
    with store.blob_references(row.sha256) as session:
        if session.get(FileRow, row.seq) is None:
            return False
        try:
            os.link(blobs.path(row.sha256), target)
        except FileExistsError:
            pass
        except OSError:  # another filesystem
            shutil.copyfile(blobs.path(row.sha256), target)
    return True
