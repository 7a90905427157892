"""POST /v1/classifications: a classifier run's label and the probability of every label for a batch
of texts, the same numbers `tunesmith predict` writes.

    {"model": "tone-classifier", "input": ["text", ...]}
    -> {"object": "list", "model": "tone-classifier",
        "data": [{"object": "classification", "index": 0, "label": "positive",
                  "probabilities": {"negative": 0.03, "positive": 0.97}}, ...],
        "usage": {"prompt_tokens": 12, "total_tokens": 12}}
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
MAX_TEXTS = 256


class ClassificationRequest(RequestBody):
    model: str
    input: str | list[str] = Field(min_length=1)


@router.post("/classifications", dependencies=[Depends(require_key)])
async def classify(body: ClassificationRequest, request: Request) -> dict:
    from tunesmith.models.classifier import predict_probabilities

    started = time.perf_counter()
    served = find_model(request, body.model, ("classifier",))
    texts = [body.input] if isinstance(body.input, str) else body.input
    if len(texts) > MAX_TEXTS:
        raise APIError(400, f"{len(texts)} texts in one request, the most is {MAX_TEXTS}", param="input")
    models = request.app.state.models

    def classify_texts():
        head = models.head_of(served)
        return head, predict_probabilities(head, texts)

    classifier, probabilities = await asyncio.wrap_future(request.app.state.engine.call(classify_texts))
    tokens = sum(len(ids) for ids in classifier.tokenizer(texts, truncation=True, max_length=classifier.max_length)["input_ids"])
    request.app.state.metrics.answered("classifications", body.model, 200, time.perf_counter() - started, tokens)
    return {"object": "list", "model": body.model,
            "data": [{"object": "classification", "index": i, "label": classifier.labels[int(row.argmax())],
                      "probabilities": {label: round(float(p), 6) for label, p in zip(classifier.labels, row)}}
                     for i, row in enumerate(probabilities)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
