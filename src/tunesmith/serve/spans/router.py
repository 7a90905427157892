"""Span runs: POST /v1/entities (a token-classify run: each text's entities) and POST /v1/answers (an
extractive-qa run: each question's answer in its context), the same rows `tunesmith predict` writes.

    {"model": "ner", "input": ["Barve Deirfei built a lamp in Vesk."]}
    -> {"object": "list", "model": "ner", "data": [{"object": "entities", "index": 0, "entities":
        [{"text": "Barve Deirfei", "label": "PER", "start": 0, "end": 13, "score": 0.99}, ...]}]}

    {"model": "reader", "questions": [{"question": "Who built the lamp?", "context": "..."}]}
    -> {"object": "list", "model": "reader", "data": [{"object": "answer", "index": 0,
        "answer": "Barve Deirfei", "start": 0, "score": 0.97}]}     (answer "" and start -1: none)
"""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Request
from pydantic import Field

from tunesmith.serve.access import find_model
from tunesmith.serve.auth import require_key
from tunesmith.serve.bodies import RequestBody
from tunesmith.serve.errors import APIError

router = APIRouter(prefix="/v1")
MAX_ROWS = 256


class EntitiesRequest(RequestBody):
    model: str
    input: str | list[str] = Field(min_length=1)


class Question(RequestBody):
    question: str = Field(min_length=1)
    context: str = Field(min_length=1)
    id: str | None = None


class AnswersRequest(RequestBody):
    model: str
    questions: list[Question] = Field(min_length=1, max_length=MAX_ROWS)


@router.post("/entities", dependencies=[Depends(require_key)])
async def entities(body: EntitiesRequest, request: Request) -> dict:
    from tunesmith.models.tagger import find_entities

    started = time.perf_counter()
    served = find_model(request, body.model, ("tagger",))
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > MAX_ROWS:
        raise APIError(400, f"{len(texts)} texts in one request, the most is {MAX_ROWS}", param="input")
    models = request.app.state.models
    found, _ = await asyncio.wrap_future(request.app.state.engine.call(
        lambda: find_entities(models.head_of(served), texts)))
    request.app.state.metrics.answered("entities", body.model, 200, time.perf_counter() - started)
    return {"object": "list", "model": body.model,
            "data": [{"object": "entities", "index": i, "entities": [e.as_dict() for e in row]}
                     for i, row in enumerate(found)]}


@router.post("/answers", dependencies=[Depends(require_key)])
async def answers(body: AnswersRequest, request: Request) -> dict:
    from tunesmith.data.qa import QARow
    from tunesmith.models.reader import read_answers

    started = time.perf_counter()
    served = find_model(request, body.model, ("reader",))
    rows = [QARow(f"request:{i}", q.id or str(i), q.question, q.context, ()) for i, q in enumerate(body.questions)]
    models = request.app.state.models
    found = await asyncio.wrap_future(request.app.state.engine.call(lambda: read_answers(models.head_of(served), rows)))
    request.app.state.metrics.answered("answers", body.model, 200, time.perf_counter() - started)
    return {"object": "list", "model": body.model,
            "data": [{"object": "answer", "index": i, "id": row.id, **answer.as_dict()}
                     for i, (row, answer) in enumerate(zip(rows, found))]}
