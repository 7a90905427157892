"""What every request body of the API is built from: a pydantic model that refuses text which is
valid JSON but not Unicode. JSON may escape a lone surrogate (`"\\ud800"`); Python reads it into a
str that no UTF-8 encoder, tokenizer or database driver takes, so one such field failed its request
with a 500 (and, kept in a stored completion's metadata, every later read of it). Refused here, at
the schema, with a 400 naming the field."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, model_validator


def lone_surrogate_at(value: Any, where: str = "") -> str | None:
    """The path of the first string in `value` (nested dicts and lists) holding a lone surrogate."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where or "body"
        return None
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, (list, tuple)):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and lone_surrogate_at(key) is not None:
            return where or "body"
        found = lone_surrogate_at(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


class RequestBody(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _unicode_text(cls, data: Any) -> Any:
        where = lone_surrogate_at(data)
        if where is not None:
            raise ValueError(f"{where} holds a lone surrogate (valid JSON, not Unicode text); send UTF-8 text")
        return data
