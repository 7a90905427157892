"""What the grader endpoints check and how a model grader's model answers.

A grader is checked as training checks it (tunesmith.graders.validate_grader), then against this
server: a python grader only where the server allows them (--allow-python-graders), and a
score_model or label_model grader only naming a model the caller's project is served, found by the
same lookup as every other route (serve/access.py): another project's model is a 404, as a name
that does not exist. The grader model answers through the server's own engine, as a chat
completion held to the grader's answer schema, and its tokens are counted per model."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request

from tunesmith.graders import Grader, GraderError, validate_grader
from tunesmith.graders.run import python_paths
from tunesmith.serve.auth import project_of
from tunesmith.serve.errors import APIError
from tunesmith.serve.openai import service as chat
from tunesmith.serve.openai import tools
from tunesmith.serve.openai.schemas import ChatRequest

MODEL_GRADERS = ("score_model", "label_model")


def grader_error(exc: GraderError, code: str = "invalid_value") -> APIError:
    """A 400 in OpenAI's error shape: every problem in the message, the first one's field as `param`."""
    first = exc.problems[0].split(":", 1)[0].split(" ", 1)[0]
    return APIError(400, "; ".join(exc.problems), param=first, code=code)


def model_grader_paths(grader: Grader) -> dict[str, str]:
    """Where `grader` holds model graders (`grader`, `grader.graders.NAME`) and the model each names."""
    if grader.type in MODEL_GRADERS:
        return {"grader": grader.model}
    if grader.type == "multi":
        return {f"grader.graders.{name}": sub.model for name, sub in grader.graders.items() if sub.type in MODEL_GRADERS}
    return {}


async def checked_grader(request: Request, raw: dict[str, Any]) -> Grader:
    """The typed grader, or a 400 naming its bad field (a python grader the server does not allow,
    too); a 404 naming a model grader's model that this key's project is not served."""
    try:
        grader = validate_grader(raw)
    except GraderError as exc:
        raise grader_error(exc) from exc
    paths = python_paths(grader)
    if paths and not request.app.state.jobs.config.allow_python_graders:
        raise APIError(400, f"{paths[0]}: python graders run code on the server, and this server was not started "
                            "with --allow-python-graders; use string_check, text_similarity or a model grader, or ask "
                            "the operator to allow python graders", param=paths[0], code="python_graders_not_allowed")
    for path, model in model_grader_paths(grader).items():
        await _check_model(request, path, model)
    return grader


async def _check_model(request: Request, path: str, model: str) -> None:
    jobs = request.app.state.jobs
    if request.app.state.models.get(model) is None:  # a finished job's model, not loaded yet: load it (its project only)
        try:
            await jobs.serve_model(request.app, model, project_of(request))
        except APIError:
            pass
    try:
        chat.find_generative(request, model)
    except APIError as exc:
        if exc.status == 404:
            raise APIError(404, f"{path}.model: the model `{model}` does not exist here; a model grader asks one of "
                                "the generative models GET /v1/models lists", param=f"{path}.model",
                           code="model_not_found") from exc
        raise APIError(exc.status, f"{path}.model: {exc.message}", param=f"{path}.model", code=exc.code) from exc


class ServedModelRunner:
    """tunesmith.graders' model runner over this server's engine, for one request: called from the
    thread that grades, it answers on the server's event loop; tokens are counted per model."""

    def __init__(self, request: Request, loop: asyncio.AbstractEventLoop) -> None:
        self.request, self.loop = request, loop
        self.usage: dict[str, dict[str, int]] = {}

    def __call__(self, messages: list[dict[str, Any]], request: dict[str, Any]) -> str:
        return asyncio.run_coroutine_threadsafe(self._answer(messages, request), self.loop).result()

    async def _answer(self, messages: list[dict[str, Any]], arguments: dict[str, Any]) -> str:
        fields = {key: value for key, value in arguments.items() if key != "reasoning_effort"}  # no such setting here
        body = ChatRequest.model_validate({**fields, "messages": messages})
        served = chat.find_generative(self.request, body.model)
        sampling = chat.sampling_of(body, self.request, None)
        prompt_ids = chat.chat_prompt(served, body)
        chat.check_context(served, self.request, prompt_ids, sampling)
        constraints = await tools.constraints_for(served, body)
        submission = chat.Submission(self.request.app.state.engine, served, [(prompt_ids, sampling)], len(prompt_ids),
                                     constraints)
        choice = (await submission.choices(self.request))[0]
        counted = self.usage.setdefault(body.model, {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0})
        counted["prompt_tokens"] += len(prompt_ids)
        counted["completion_tokens"] += choice.completion_tokens
        counted["total_tokens"] += len(prompt_ids) + choice.completion_tokens
        return choice.text


def with_usage(response: dict[str, Any], runner: ServedModelRunner | None) -> dict[str, Any]:
    """The run response with the grader models' tokens (OpenAI's model_grader_token_usage_per_model and
    metadata.token_usage, their total)."""
    if runner is None or not runner.usage:
        return response
    response["model_grader_token_usage_per_model"] = runner.usage
    response["metadata"]["token_usage"] = sum(usage["total_tokens"] for usage in runner.usage.values())
    return response
