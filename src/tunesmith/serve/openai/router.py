"""The OpenAI endpoints: /v1/models, /v1/chat/completions, /v1/completions, and vLLM's
/v1/load_lora_adapter and /v1/unload_lora_adapter (admin key)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import AsyncIterator

from fastapi import APIRouter, Depends, Request
from fastapi.responses import PlainTextResponse, StreamingResponse

from tunesmith.errors import TunesmithError
from tunesmith.models.tool_calls import ToolCallStream
from tunesmith.serve.access import find_model, visible_models
from tunesmith.serve.auth import project_of, require_admin, require_key
from tunesmith.serve.errors import APIError
from tunesmith.serve.openai import service, tools
from tunesmith.serve.openai.schemas import (
    ChatRequest,
    CompletionRequest,
    LoadAdapterRequest,
    UnloadAdapterRequest,
)
from tunesmith.serve.stored import service as stored

router = APIRouter(prefix="/v1")


@router.get("/models", dependencies=[Depends(require_key)])
async def list_models(request: Request) -> dict:
    cards = [served.as_model_card() for served in visible_models(request)]
    if request.app.state.jobs is not None:  # listed from the store, never loaded for a listing
        known = {card["id"] for card in cards}
        cards += [card for card in await request.app.state.jobs.model_cards(project_of(request))
                  if card["id"] not in known]
    return {"object": "list", "data": cards}


@router.get("/models/{name:path}", dependencies=[Depends(require_key)])
async def get_model(name: str, request: Request) -> dict:
    if request.app.state.models.get(name) is None and request.app.state.jobs is not None:
        card = await request.app.state.jobs.model_card(name, project_of(request))
        if card is not None:  # a finished job's model, described without loading it
            return card
    return find_model(request, name).as_model_card()


async def _fine_tuned(request: Request, name: str) -> None:
    """A fine-tuning job's model that this server has not loaded yet (finished by a worker): load it.
    A run whose current generation changed (retrain promoted one, or a rollback): answer with it."""
    models = request.app.state.models
    if models.lineage_changed(name):
        await asyncio.wrap_future(request.app.state.engine.call(lambda: models.refresh_lineage(name)))
    if request.app.state.jobs is not None and models.get(name) is None:
        await request.app.state.jobs.serve_model(request.app, name, project_of(request))


@router.post("/chat/completions", dependencies=[Depends(require_key)])
async def chat_completions(body: ChatRequest, request: Request):
    started = time.perf_counter()
    await _fine_tuned(request, body.model)
    served = service.find_generative(request, body.model)
    service.check_supported(body)
    tools.check_request(body)
    keep = stored.wants_store(request, body)
    if body.top_logprobs is not None and not body.logprobs:
        raise APIError(400, "top_logprobs needs logprobs=true", param="top_logprobs", code="invalid_value")
    sampling = service.sampling_of(body, request, (body.top_logprobs or 0) if body.logprobs else None)
    prompt_ids = service.chat_prompt(served, body)
    service.check_context(served, request, prompt_ids, sampling)
    constraints = await tools.constraints_for(served, body)
    completion_id = service.new_id("chatcmpl")
    messages = [{"role": m.role, "content": m.text(),
                 **({"tool_calls": [call.model_dump() for call in m.tool_calls]} if m.tool_calls else {}),
                 **({"tool_call_id": m.tool_call_id} if m.tool_call_id else {})} for m in body.messages]

    async def keep_record(choices: list[dict], completion_tokens: int, error: str | None = None) -> None:
        if not keep:
            return
        try:
            await stored.record(request, completion_id=completion_id, served=served, messages=messages,
                                choices=choices, body=body, prompt_tokens=len(prompt_ids),
                                completion_tokens=completion_tokens, started=started, error=error)
        except Exception as exc:  # the answer was generated: the client gets it; the store's failure is logged
            print(f"tunesmith serve: {completion_id} was answered but not stored: {type(exc).__name__}: {exc}",
                  file=sys.stderr, flush=True)

    try:
        submission = service.Submission(request.app.state.engine, served, [(prompt_ids, sampling)] * body.n,
                                        len(prompt_ids), constraints)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return _streaming(request, _chat_chunks(request, submission, completion_id, body, include_usage, keep_record),
                              body.model, started)
        choices = await submission.choices(request)
    except APIError as exc:
        if exc.status >= 429:  # the model was asked and did not answer: the monitor's error rate
            await keep_record([], 0, exc.message)
        raise
    response = service.chat_response(completion_id, body.model, choices, submission.prompt_tokens, body.logprobs,
                                     tools.parses_calls(body))
    _count(request, "chat", body.model, started, response["usage"])
    await keep_record([{"index": c.index, "text": c.text, "finish_reason": c.finish_reason} for c in choices],
                      response["usage"]["completion_tokens"])
    return response


@router.post("/completions", dependencies=[Depends(require_key)])
async def completions(body: CompletionRequest, request: Request):
    started = time.perf_counter()
    await _fine_tuned(request, body.model)
    served = service.find_generative(request, body.model)
    service.check_supported(body)
    sampling = service.sampling_of(body, request, body.logprobs)
    encoded = [service.text_prompt(served, prompt) for prompt in body.prompts()]
    if not body.prompts() or any(not prompt_ids for prompt_ids in encoded):
        raise APIError(400, "prompt is empty (no tokens to continue); give some text", param="prompt",
                       code="invalid_value")
    for prompt_ids in encoded:
        service.check_context(served, request, prompt_ids, sampling)
    rows = [(prompt_ids, sampling) for prompt_ids in encoded for _ in range(body.n)]  # choice i*n + j
    submission = service.Submission(request.app.state.engine, served, rows, sum(len(ids) for ids in encoded))
    completion_id = service.new_id("cmpl")
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _streaming(request, _completion_chunks(request, submission, completion_id, body, include_usage),
                          body.model, started)
    choices = await submission.choices(request)
    response = service.completion_response(completion_id, body.model, choices, submission.prompt_tokens,
                                           body.logprobs is not None)
    _count(request, "completions", body.model, started, response["usage"])
    return response


async def _chat_chunks(request: Request, submission: service.Submission, completion_id: str, body: ChatRequest,
                       include_usage: bool, keep_record) -> AsyncIterator[dict]:
    created = int(time.time())
    texts = [""] * len(submission.rows)
    finish: list[str | None] = [None] * len(submission.rows)
    parsers = [ToolCallStream() for _ in submission.rows] if tools.parses_calls(body) else None

    def chunk(choices: list[dict], usage: dict | None = None) -> dict:
        return {"id": completion_id, "object": "chat.completion.chunk", "created": created, "model": body.model,
                "choices": choices, **({"usage": usage} if include_usage else {})}

    yield chunk([{"index": i, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}
                 for i in range(len(submission.rows))])
    completion_tokens = 0
    try:
        async for index, event in submission.events_until_done(request):
            if event.text or event.logprobs:
                texts[index] += event.text
                logprobs = service.chat_logprobs(event.logprobs) if body.logprobs else None
                for delta in _deltas(parsers, index, event.text, logprobs is not None):
                    yield chunk([{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}])
                    logprobs = None
            if event.finish_reason is not None:
                completion_tokens += event.completion_tokens
                finish[index] = event.finish_reason
                reason = event.finish_reason
                if parsers is not None:
                    for delta in parsers[index].close():
                        yield chunk([{"index": index, "delta": tools.stream_delta(delta), "logprobs": None,
                                      "finish_reason": None}])
                    reason = tools.finish_reason_of(bool(parsers[index].calls), reason)
                yield chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])
    except APIError as exc:
        await keep_record([], completion_tokens, exc.message)
        raise
    if all(reason is not None for reason in finish):  # a client that left gets no record of half an answer
        await keep_record([{"index": i, "text": t, "finish_reason": f} for i, (t, f) in enumerate(zip(texts, finish))],
                          completion_tokens)
    if include_usage:
        yield chunk([], service.usage(submission.prompt_tokens, completion_tokens))


def _deltas(parsers: list[ToolCallStream] | None, index: int, text: str, has_logprobs: bool) -> list[dict]:
    """A chunk delta for each thing the text adds: the text itself, or (when the reply is read for tool
    calls) its content and calls; an empty delta to carry log-probabilities that came with no text yet."""
    if parsers is None:
        return [{"content": text}]
    deltas = [tools.stream_delta(delta) for delta in parsers[index].feed(text)]
    return deltas or ([{}] if has_logprobs else [])


async def _completion_chunks(request: Request, submission: service.Submission, completion_id: str,
                             body: CompletionRequest, include_usage: bool) -> AsyncIterator[dict]:
    created = int(time.time())
    sent = [0] * len(submission.rows)

    def chunk(choices: list[dict], usage: dict | None = None) -> dict:
        return {"id": completion_id, "object": "text_completion", "created": created, "model": body.model,
                "choices": choices, **({"usage": usage} if include_usage else {})}

    completion_tokens = 0
    async for index, event in submission.events_until_done(request):
        if event.text or event.logprobs or event.finish_reason is not None:
            logprobs = service.completion_logprobs(event.logprobs, sent[index]) if body.logprobs is not None else None
            sent[index] += len(event.text)
            completion_tokens += event.completion_tokens
            yield chunk([{"index": index, "text": event.text, "logprobs": logprobs,
                          "finish_reason": event.finish_reason}])
    if include_usage:
        yield chunk([], service.usage(submission.prompt_tokens, completion_tokens))


def _streaming(request: Request, chunks: AsyncIterator[dict], model: str, started: float) -> StreamingResponse:
    """Server-sent events: one `data: {json}` per chunk, then `data: [DONE]`."""

    async def events() -> AsyncIterator[str]:
        completion_tokens = 0
        try:
            async for chunk in chunks:
                usage = chunk.get("usage")
                if usage:
                    completion_tokens = usage["completion_tokens"]
                yield f"data: {json.dumps(chunk)}\n\n"
            yield "data: [DONE]\n\n"
        except APIError as exc:  # the status line is gone: the error travels as an event
            yield f"data: {json.dumps({'error': {'message': exc.message, 'type': exc.type, 'param': exc.param, 'code': exc.code}})}\n\n"
        finally:
            request.app.state.metrics.answered("stream", model, 200, time.perf_counter() - started,
                                               completion_tokens=completion_tokens)

    return StreamingResponse(events(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


def _count(request: Request, endpoint: str, model: str, started: float, usage: dict) -> None:
    request.app.state.metrics.answered(endpoint, model, 200, time.perf_counter() - started,
                                       usage["prompt_tokens"], usage["completion_tokens"])


@router.post("/load_lora_adapter", dependencies=[Depends(require_admin)])
async def load_lora_adapter(body: LoadAdapterRequest, request: Request) -> PlainTextResponse:
    models = request.app.state.models
    if models.get(body.lora_name) is not None:
        raise APIError(400, f"The lora adapter '{body.lora_name}' has already been loaded.", param="lora_name",
                       code="already_loaded")
    try:
        served = await asyncio.wrap_future(request.app.state.engine.call(lambda: models.add_run(body.lora_path, body.lora_name)))
    except TunesmithError as exc:
        raise APIError(400, str(exc), param="lora_path", code="invalid_adapter") from exc
    return PlainTextResponse(f"Success: LoRA adapter '{served.name}' added successfully.")


@router.post("/unload_lora_adapter", dependencies=[Depends(require_admin)])
async def unload_lora_adapter(body: UnloadAdapterRequest, request: Request) -> PlainTextResponse:
    models = request.app.state.models
    try:
        await asyncio.wrap_future(request.app.state.engine.call(lambda: models.remove(body.lora_name)))
    except KeyError as exc:
        raise APIError(404, f"The lora adapter '{body.lora_name}' cannot be found.", param="lora_name",
                       code="model_not_found") from exc
    return PlainTextResponse(f"Success: LoRA adapter '{body.lora_name}' removed successfully.")

