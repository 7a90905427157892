"""OpenAI's cursor pages: `{"object": "list", "data": [...], "has_more": bool}`, `after` an id."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from tunesmith.serve.errors import APIError
from tunesmith.store.db import Page, UnknownCursor


def list_page(read: Callable[[], Page], shape: Callable[[Any], dict]) -> dict:
    try:
        page = read()
    except UnknownCursor as exc:
        raise APIError(400, f"after={exc.args[0]!r} is no id of this list; give the id of the last item of the "
                            "previous page", param="after", code="invalid_value") from exc
    data = [shape(row) for row in page.rows]
    return {"object": "list", "data": data, "has_more": page.has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}
