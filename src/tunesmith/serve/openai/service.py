"""From an OpenAI request to engine rows and back: prompts encoded as the run was trained, choices
gathered (or streamed) from the engine's events, and the response bodies in OpenAI's shapes."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from fastapi import Request

from tunesmith.data.examples import Message
from tunesmith.data.tokenize import encode_prompt
from tunesmith.models.constrained import Constraint
from tunesmith.serve.access import find_model
from tunesmith.serve.engine import Engine, Event, NeverFits, QueueFull, Row, Sampling, TokenLogprob
from tunesmith.serve.errors import APIError
from tunesmith.serve.models import GENERATIVE, Served
from tunesmith.serve.openai import tools
from tunesmith.serve.openai.schemas import ChatRequest, CompletionRequest, GenerationRequest

DISCONNECT_POLL_SECONDS = 0.5


def find_generative(request: Request, name: str) -> Served:
    return find_model(request, name, GENERATIVE)


def check_supported(body: GenerationRequest) -> None:
    field_name = body.unsupported_field()
    if field_name:
        raise APIError(400, f"`{field_name}` is not supported by this server; leave it out", param=field_name,
                       code="unsupported_parameter")


def sampling_of(body: ChatRequest | CompletionRequest, request: Request, top_logprobs: int | None) -> Sampling:
    limit = request.app.state.config.max_tokens
    budget = body.token_budget()
    if budget is not None and budget > limit:
        param = "max_completion_tokens" if getattr(body, "max_completion_tokens", None) else "max_tokens"
        raise APIError(400, f"{param}={budget} is over this server's limit of {limit}", param=param,
                       code="invalid_value")
    return Sampling(budget or limit, 1.0 if body.temperature is None else body.temperature,
                    1.0 if body.top_p is None else body.top_p, body.stop_strings(), body.seed, top_logprobs)


def chat_prompt(served: Served, body: ChatRequest) -> list[int]:
    from jinja2 import TemplateError

    messages = tools.conversation(body)
    if served.system_prompt and messages[0].role != "system":
        messages.insert(0, Message("system", served.system_prompt))
    tools.check_template(served, body, messages)
    try:
        return encode_prompt(served.tokenizer, served.info, messages, tools.prompt_tools(body))
    except TemplateError as exc:  # the template's own raise_exception: roles that do not alternate, say
        raise APIError(400, f"messages: the chat template of `{body.model}` refused this conversation: {exc}",
                       param="messages", code="invalid_value") from exc


def text_prompt(served: Served, prompt: str) -> list[int]:
    return list(served.info.prefix_ids) + served.tokenizer(prompt, add_special_tokens=False)["input_ids"]


def check_context(served: Served, request: Request, prompt_ids: list[int], sampling: Sampling) -> None:
    limit = served.context_length
    if limit and len(prompt_ids) + sampling.max_tokens > limit:
        raise APIError(400, f"the prompt ({len(prompt_ids)} tokens) and max_tokens ({sampling.max_tokens}) come to "
                            f"more than the model's context of {limit} tokens; shorten one", param="max_tokens",
                       code="context_length_exceeded")


@dataclass
class Choice:
    index: int
    text: str = ""
    logprobs: list[TokenLogprob] = field(default_factory=list)
    finish_reason: str | None = None
    completion_tokens: int = 0


class Submission:
    """One request's rows in the engine, and the queue their events come back on."""

    def __init__(self, engine: Engine, served: Served, prompts: list[tuple[list[int], Sampling]],
                 prompt_tokens: int, constraints: list[Constraint] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.started, self.model, self.first_token_seen = time.perf_counter(), served.name, False
        self.events: asyncio.Queue[tuple[int, Event]] = asyncio.Queue()
        self.rows = [Row(served, prompt_ids, sampling, self._emitter(loop, index),
                         constraint=constraints[index] if constraints else None)
                     for index, (prompt_ids, sampling) in enumerate(prompts)]
        self.prompt_tokens = prompt_tokens  # each prompt once, however many choices read it (OpenAI's count)
        self.open = len(self.rows)
        try:
            engine.submit(self.rows)
        except NeverFits as exc:
            raise APIError(400, f"{exc}: it can never fit; ask for fewer choices (n) or prompts",
                           param="n", code="invalid_value") from exc
        except QueueFull as exc:
            raise APIError(429, f"the server is busy ({exc}); retry shortly", type="rate_limit_error",
                           code="rate_limit_exceeded") from exc

    def _emitter(self, loop: asyncio.AbstractEventLoop, index: int):
        return lambda event: loop.call_soon_threadsafe(self.events.put_nowait, (index, event))

    def cancel(self) -> None:
        for row in self.rows:
            row.cancelled.set()

    async def events_until_done(self, request: Request) -> AsyncIterator[tuple[int, Event]]:
        """Every event of every row, until all rows finished; cancels the rows if the client leaves."""
        try:
            while self.open:
                try:
                    index, event = await asyncio.wait_for(self.events.get(), DISCONNECT_POLL_SECONDS)
                except TimeoutError:
                    if await request.is_disconnected():
                        self.cancel()
                        return
                    continue
                if event.error is not None:
                    raise APIError(500, f"generation failed: {event.error}", type="server_error",
                                   code="generation_failed")
                if not self.first_token_seen:
                    self.first_token_seen = True
                    request.app.state.metrics.first_token.labels(self.model).observe(time.perf_counter() - self.started)
                if event.finish_reason is not None:
                    self.open -= 1
                yield index, event
        finally:
            if self.open:
                self.cancel()

    async def choices(self, request: Request) -> list[Choice]:
        choices = [Choice(index) for index in range(len(self.rows))]
        async for index, event in self.events_until_done(request):
            choice = choices[index]
            choice.text += event.text
            choice.logprobs += event.logprobs
            if event.finish_reason is not None:
                choice.finish_reason, choice.completion_tokens = event.finish_reason, event.completion_tokens
        return choices


def new_id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:24]}"


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def chat_logprobs(logprobs: list[TokenLogprob]) -> dict:
    def entry(token: str, logprob: float) -> dict:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**entry(item.token, item.logprob), "top_logprobs": [entry(t, v) for t, v in item.top]}
                        for item in logprobs], "refusal": None}


def completion_logprobs(logprobs: list[TokenLogprob], offset: int = 0) -> dict:
    offsets, position = [], offset
    for item in logprobs:
        offsets.append(position)
        position += len(item.token)
    return {"tokens": [item.token for item in logprobs], "token_logprobs": [item.logprob for item in logprobs],
            "top_logprobs": [dict(item.top) for item in logprobs], "text_offset": offsets}


def chat_response(completion_id: str, model: str, choices: list[Choice], prompt_tokens: int, want_logprobs: bool,
                  parse_calls: bool = False) -> dict:
    """OpenAI's ChatCompletion; with `parse_calls`, each reply's tool calls as `message.tool_calls`."""
    replies = [tools.assistant_message(c.text, c.finish_reason, parse_calls) for c in choices]
    return {
        "id": completion_id, "object": "chat.completion", "created": int(time.time()), "model": model,
        "choices": [{"index": c.index, "message": message,
                     "logprobs": chat_logprobs(c.logprobs) if want_logprobs else None,
                     "finish_reason": finish_reason} for c, (message, finish_reason) in zip(choices, replies)],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
    }


def completion_response(completion_id: str, model: str, choices: list[Choice], prompt_tokens: int,
                        want_logprobs: bool) -> dict:
    return {
        "id": completion_id, "object": "text_completion", "created": int(time.time()), "model": model,
        "choices": [{"index": c.index, "text": c.text,
                     "logprobs": completion_logprobs(c.logprobs) if want_logprobs else None,
                     "finish_reason": c.finish_reason} for c in choices],
        "usage": usage(prompt_tokens, sum(c.completion_tokens for c in choices)),
    }
