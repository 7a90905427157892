"""Feedback on a stored completion: POST /v1/chat/completions/{id}/feedback with a score (thumbs:
1 or -1, or any number), an optional comment and an optional corrected answer; GET lists it.

Corrections become training rows (`tunesmith feedback export`, then `retrain`), so each feedback
records which key gave it (a fingerprint: store.completions.key_fingerprint), and one key may give
at most `max_feedback_per_key_per_hour` in any hour: one more is answered 429 in OpenAI's shape,
with Retry-After."""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import Field, model_validator

from tunesmith.serve.auth import key_of, project_of, require_key
from tunesmith.serve.bodies import RequestBody
from tunesmith.serve.errors import error_response
from tunesmith.serve.stored.router import completions_of, not_found, stored_row
from tunesmith.serve.stored.service import feedback_object
from tunesmith.store.completions import FeedbackCapReached, key_fingerprint

router = APIRouter(prefix="/v1/chat/completions", dependencies=[Depends(require_key)])


class FeedbackRequest(RequestBody):
    score: float | None = None
    comment: str | None = Field(None, max_length=20_000)
    correction: str | None = Field(None, max_length=200_000)

    @model_validator(mode="after")
    def _something(self) -> FeedbackRequest:
        if self.score is None and not self.comment and not self.correction:
            raise ValueError("give a score (1 or -1 for thumbs), a comment or a correction")
        if self.score is not None and not math.isfinite(self.score):
            raise ValueError("score must be a finite number")
        return self


@router.post("/{completion_id}/feedback", response_model=None)
async def add_feedback(completion_id: str, body: FeedbackRequest, request: Request) -> dict | JSONResponse:
    completion = stored_row(request, completion_id)
    try:
        row = await asyncio.to_thread(completions_of(request).add_feedback, project_of(request), completion_id,
                                      score=body.score, comment=body.comment, correction=body.correction,
                                      key_fingerprint=fingerprint_of(request),
                                      cap_per_hour=request.app.state.config.max_feedback_per_key_per_hour)
    except FeedbackCapReached as exc:
        refused = error_response(429, str(exc), type="rate_limit_error", code="rate_limit_exceeded")
        refused.headers["Retry-After"] = str(exc.retry_after)
        return refused
    if row is None:
        raise not_found(completion_id)
    request.app.state.metrics.feedback.labels(completion.model).inc()
    return feedback_object(row)


def fingerprint_of(request: Request) -> str | None:
    """The fingerprint of the key the request was let in with; None on a server without keys
    (development mode: whatever Bearer a local client sends was never checked)."""
    config = request.app.state.config
    key = key_of(request)
    return key_fingerprint(key) if key is not None and (config.api_keys or config.admin_keys) else None


@router.get("/{completion_id}/feedback")
def list_feedback(completion_id: str, request: Request) -> dict:
    row = stored_row(request, completion_id)
    data = [feedback_object(f) for f in completions_of(request).feedback([row.id]).get(row.id, [])]
    return {"object": "list", "data": data, "has_more": False}

