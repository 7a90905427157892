"""Feedback on a stored completion: POST /v1/chat/completions/{id}/feedback with a score (thumbs:
1 or -1, or any number), an optional comment and an optional corrected answer; GET lists it."""

from __future__ import annotations

import asyncio
import math

from fastapi import APIRouter, Depends, Request
from pydantic import BaseModel, Field, model_validator

from tunesmith.serve.auth import project_of, require_key
from tunesmith.serve.stored.router import completions_of, not_found, stored_row
from tunesmith.serve.stored.service import feedback_object

router = APIRouter(prefix="/v1/chat/completions", dependencies=[Depends(require_key)])


class FeedbackRequest(BaseModel):
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


@router.post("/{completion_id}/feedback")
async def add_feedback(completion_id: str, body: FeedbackRequest, request: Request) -> dict:
    completion = stored_row(request, completion_id)
    row = await asyncio.to_thread(completions_of(request).add_feedback, project_of(request), completion_id,
                                  score=body.score, comment=body.comment, correction=body.correction)
    if row is None:
        raise not_found(completion_id)
    request.app.state.metrics.feedback.labels(completion.model).inc()
    return feedback_object(row)


@router.get("/{completion_id}/feedback")
def list_feedback(completion_id: str, request: Request) -> dict:
    row = stored_row(request, completion_id)
    data = [feedback_object(f) for f in completions_of(request).feedback([row.id]).get(row.id, [])]
    return {"object": "list", "data": data, "has_more": False}

