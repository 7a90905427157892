"""OpenAI's stored-completions reads: GET /v1/chat/completions (filters: model, metadata[KEY],
after, limit, order), GET/POST/DELETE /v1/chat/completions/{id}, GET .../{id}/messages."""

from __future__ import annotations

import asyncio
import re

from fastapi import APIRouter, Depends, Query, Request

from tunesmith.serve.auth import project_of, require_key
from tunesmith.serve.bodies import RequestBody
from tunesmith.serve.errors import APIError
from tunesmith.serve.pages import list_page
from tunesmith.serve.stored.service import completion_object, recorder_of
from tunesmith.store.tables import CompletionRow

router = APIRouter(prefix="/v1/chat/completions", dependencies=[Depends(require_key)])
METADATA_KEY = re.compile(r"^metadata\[(.+)\]$")


class UpdateRequest(RequestBody):
    metadata: dict[str, str] | None


def completions_of(request: Request):
    recorder = recorder_of(request)
    if recorder is None:
        raise APIError(400, "this server keeps no completions; start it with `tunesmith serve --store`",
                       code="store_unavailable")
    return recorder.completions


def not_found(completion_id: str) -> APIError:
    return APIError(404, f"No chat completion found with id '{completion_id}'.", param="completion_id",
                    code="completion_not_found")


def stored_row(request: Request, completion_id: str) -> CompletionRow:
    row = completions_of(request).get(project_of(request), completion_id)
    if row is None or row.error is not None:
        raise not_found(completion_id)
    return row


@router.get("")
def list_completions(request: Request, model: str | None = None, after: str | None = None,
                     limit: int = Query(20, ge=1, le=100), order: str = Query("asc", pattern="^(asc|desc)$")) -> dict:
    store = completions_of(request)
    metadata = {match.group(1): value for key, value in request.query_params.items()
                if (match := METADATA_KEY.match(key))}
    return list_page(lambda: store.list(project_of(request), model=model, metadata=metadata, after=after, limit=limit,
                                        order=order), completion_object)


@router.get("/{completion_id}")
def get_completion(completion_id: str, request: Request) -> dict:
    row = stored_row(request, completion_id)
    return completion_object(row, completions_of(request).feedback([row.id]).get(row.id))


@router.post("/{completion_id}")
def update_completion(completion_id: str, body: UpdateRequest, request: Request) -> dict:
    stored_row(request, completion_id)
    row = completions_of(request).update_metadata(project_of(request), completion_id, body.metadata)
    return completion_object(row)


@router.delete("/{completion_id}")
async def delete_completion(completion_id: str, request: Request) -> dict:
    stored_row(request, completion_id)
    await asyncio.to_thread(completions_of(request).delete, project_of(request), completion_id)
    return {"id": completion_id, "object": "chat.completion.deleted", "deleted": True}


@router.get("/{completion_id}/messages")
def list_messages(completion_id: str, request: Request, after: str | None = None,
                  limit: int = Query(20, ge=1, le=100), order: str = Query("asc", pattern="^(asc|desc)$")) -> dict:
    row = stored_row(request, completion_id)
    messages = [{"id": f"{row.id}-{i}", "role": m["role"], "content": m["content"], "name": None,
                 "content_parts": None} for i, m in enumerate(row.messages)]
    if order == "desc":
        messages.reverse()
    if after is not None:
        ids = [m["id"] for m in messages]
        if after not in ids:
            raise APIError(400, f"after={after!r} is no message id of this completion", param="after", code="invalid_value")
        messages = messages[ids.index(after) + 1:]
    page = messages[:limit]
    return {"object": "list", "data": page, "has_more": len(messages) > limit,
            "first_id": page[0]["id"] if page else None, "last_id": page[-1]["id"] if page else None}
