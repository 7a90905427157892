"""Uploads: the bytes go to the content-addressed blobs, the row to the store."""

from __future__ import annotations

from pathlib import PurePath
from typing import BinaryIO

from tunesmith.serve.errors import APIError
from tunesmith.serve.files.schemas import FINE_TUNE_SUFFIXES, PURPOSES
from tunesmith.store.blobs import TooLarge
from tunesmith.store.tables import FileRow
from tunesmith.store.uploads import add_upload

MAX_FILENAME = 512  # the store's column (PostgreSQL refuses a longer value: it answered 500 and left the bytes behind)


def check_upload(filename: str, purpose: str) -> None:
    if len(PurePath(filename).name) > MAX_FILENAME:
        raise APIError(400, f"the file's name is {len(PurePath(filename).name)} characters, over {MAX_FILENAME}; "
                            "rename it", param="file", code="invalid_value")
    if purpose not in PURPOSES:
        raise APIError(400, f"purpose={purpose!r} is not one of {', '.join(PURPOSES)}", param="purpose",
                       code="invalid_value")
    if purpose == "fine-tune" and PurePath(filename).suffix.lower() not in FINE_TUNE_SUFFIXES:
        raise APIError(400, f"{filename}: a fine-tune file must be one of {', '.join(FINE_TUNE_SUFFIXES)} "
                            "(OpenAI's format is .jsonl)", param="file", code="invalid_file_format")


def store_upload(jobs, project: str, filename: str, purpose: str, stream: BinaryIO) -> FileRow:
    """`jobs` is the server's JobsService."""
    check_upload(filename, purpose)
    if _is_empty(stream):
        raise APIError(400, f"{filename} is empty", param="file", code="invalid_file_format")
    try:
        return add_upload(jobs.store, jobs.blobs, project, PurePath(filename).name or "upload", purpose, stream,
                          jobs.config.max_upload_bytes)
    except TooLarge as exc:
        raise APIError(413, f"{filename} is over this server's upload limit of {jobs.config.max_upload_bytes} bytes",
                       param="file", code="file_too_large") from exc


def _is_empty(stream: BinaryIO) -> bool:
    start = stream.tell()
    empty = stream.read(1) == b""
    stream.seek(start)
    return empty
