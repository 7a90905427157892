"""OpenAI's File object (openai.types.FileObject) and its deletion answer."""

from __future__ import annotations

from tunesmith.store.tables import FileRow

PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
# what tunesmith's data reader reads (data/read.py); OpenAI itself takes .jsonl only
FINE_TUNE_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")


def file_object(row: FileRow) -> dict:
    return {"id": row.id, "object": "file", "bytes": row.bytes, "created_at": row.created_at,
            "filename": row.filename, "purpose": row.purpose, "status": "processed", "expires_at": None,
            "status_details": None}


def file_deleted(file_id: str) -> dict:
    return {"id": file_id, "object": "file", "deleted": True}
