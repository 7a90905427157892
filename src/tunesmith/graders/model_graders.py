"""score_model and label_model: a grader model reads a rubric prompt and answers with a score or a label.

The caller decides which model answers, through a model runner: `runner(messages, request) -> str`,
where `messages` are Chat Completions messages (the grader's `input` with its templates filled) and
`request` is the rest of a Chat Completions request: the grader's `model`, its sampling_params under
Chat Completions' names (max_completion_tokens, temperature, top_p, seed, reasoning_effort), and a
`response_format` JSON schema for the answer. So a served model is one line away:

    runner = lambda messages, request: client.chat.completions.create(messages=messages, **request).choices[0].message.content

`LocalModelRunner` (the default) generates with a local model through tunesmith's own generate, held
to that schema by constrained decoding, whatever model the grader names. The answer is read as
OpenAI's graders ask for it: {"steps": [{"description", "conclusion"}...], "result": ...}; a bare
number (score) or a bare label is also taken, for runners that cannot hold a model to a schema.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from tunesmith.graders.outcome import Outcome
from tunesmith.graders.schema import GraderMessage, LabelModelGrader, ScoreModelGrader
from tunesmith.graders.templates import TemplateProblem, parse_json, render

ModelRunner = Callable[[list[dict[str, Any]], dict[str, Any]], str]
_STEPS = {"type": "array", "items": {
    "type": "object", "properties": {"description": {"type": "string"}, "conclusion": {"type": "string"}},
    "required": ["description", "conclusion"], "additionalProperties": False}}


class ModelRefusal(Exception):
    """Raised by a model runner whose model refused to grade (Chat Completions' `refusal`)."""


def answer_schema(grader: ScoreModelGrader | LabelModelGrader) -> dict[str, Any]:
    if isinstance(grader, ScoreModelGrader):
        low, high = grader.score_range
        result: dict[str, Any] = {"type": "number", "minimum": low, "maximum": high}
    else:
        result = {"type": "string", "enum": list(grader.labels)}
    return {"type": "object", "properties": {"steps": _STEPS, "result": result},
            "required": ["steps", "result"], "additionalProperties": False}


def chat_request(grader: ScoreModelGrader | LabelModelGrader) -> dict[str, Any]:
    """The Chat Completions arguments besides `messages` that the runner is asked to use."""
    request: dict[str, Any] = {"model": grader.model, "response_format": {"type": "json_schema", "json_schema": {
        "name": grader.type, "strict": True, "schema": answer_schema(grader)}}}
    params = getattr(grader, "sampling_params", None)
    if params is not None:
        chat_names = {"max_completions_tokens": "max_completion_tokens"}
        request.update({chat_names.get(key, key): value for key, value in params.model_dump(exclude_none=True).items()})
    return request


def chat_messages(messages: list[GraderMessage], sample: dict[str, Any], item: dict[str, Any]) -> list[dict[str, Any]]:
    """The grader's prompt as Chat Completions messages, templates filled (TemplateProblem if one cannot be)."""
    return [{"role": message.role, "content": _content(message.content, sample, item)} for message in messages]


def _content(content: Any, sample: dict[str, Any], item: dict[str, Any]) -> Any:
    if isinstance(content, str):
        return render(content, sample, item)
    if not isinstance(content, list):
        return [_part(content, sample, item)]
    return [_part(part, sample, item) for part in content]


def _part(part: Any, sample: dict[str, Any], item: dict[str, Any]) -> dict[str, Any]:
    if isinstance(part, str):
        return {"type": "text", "text": render(part, sample, item)}
    if part.type in ("input_text", "output_text"):
        return {"type": "text", "text": render(part.text, sample, item)}
    if part.type == "input_image":
        return {"type": "image_url", "image_url": {"url": part.image_url, **({"detail": part.detail} if part.detail else {})}}
    return {"type": "input_audio", "input_audio": part.input_audio.model_dump()}


def grade_with_model(grader: ScoreModelGrader | LabelModelGrader, sample: dict[str, Any], item: dict[str, Any],
                     runner: ModelRunner) -> Outcome:
    try:
        messages = chat_messages(grader.input, sample, item)
    except TemplateProblem as problem:
        return Outcome.failed(problem.kind, str(problem))
    try:
        answer = runner(messages, chat_request(grader))
    except ModelRefusal as refusal:
        return Outcome.failed("model_grader_refusal_error", f"the grader model refused: {refusal}")
    except Exception as error:  # noqa: BLE001 - whatever the caller's runner raised, reported, not raised
        details = f"{type(error).__name__}: {error}"
        return Outcome.failed("model_grader_server_error", f"the model runner failed: {details}",
                              model_grader_server_error_details=details)
    if not isinstance(answer, str):
        details = f"the model runner returned {type(answer).__name__}, not the model's text"
        return Outcome.failed("model_grader_server_error", details, model_grader_server_error_details=details)
    if isinstance(grader, ScoreModelGrader):
        return _read_score(answer, *grader.score_range)
    return _read_label(answer, grader.labels, grader.passing_labels)


def _read_score(answer: str, low: float, high: float) -> Outcome:
    parsed = parse_json(answer)
    value = parsed.get("result") if isinstance(parsed, dict) else parsed
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return Outcome.failed("model_grader_parse_error", f"the grader model's answer has no score: {_shown(answer)}")
    if not low <= value <= high:
        return Outcome.failed("model_grader_parse_error",
                              f"the grader model's score {value:g} is outside the range [{low:g}, {high:g}]")
    return Outcome(reward=float(value), scores=parsed if isinstance(parsed, dict) else {"result": value})


def _read_label(answer: str, labels: list[str], passing: list[str]) -> Outcome:
    parsed = parse_json(answer)
    label = parsed.get("result") if isinstance(parsed, dict) else answer.strip()
    if label not in labels:
        return Outcome.failed("model_grader_parse_error",
                              f"the grader model's answer is none of the labels ({', '.join(labels)}): {_shown(answer)}")
    return Outcome(reward=1.0 if label in passing else 0.0, scores=parsed if isinstance(parsed, dict) else {"result": label})


def _shown(text: str) -> str:
    return repr(text) if len(text) <= 200 else repr(text[:197] + "...")


class LocalModelRunner:
    """A model runner that answers with a local model (a catalog name, a folder or a run), through
    tunesmith's generate, holding the answer to the request's JSON schema. Loaded on first use."""

    def __init__(self, model: str | None = None, *, device: str = "auto", max_new_tokens: int = 512,
                 max_steps: int = 3, max_step_chars: int = 300) -> None:
        from tunesmith.config.model import DEFAULT_MODEL

        self.model, self.device, self.max_new_tokens = model or DEFAULT_MODEL, device, max_new_tokens
        # A small model, left to write "steps" as long as it likes, can repeat them until its tokens
        # run out and never write its result: it gets at most `max_steps` steps of `max_step_chars`.
        self.max_steps, self.max_step_chars = max_steps, max_step_chars
        self._loaded: Any = None

    def __call__(self, messages: list[dict[str, Any]], request: dict[str, Any]) -> str:
        from tunesmith.data.examples import Message
        from tunesmith.models.constrained import json_grammar
        from tunesmith.models.generate import generate, load_for_generation

        prompt = [Message("system" if m["role"] == "developer" else m["role"], _text_of(m["content"])) for m in messages]
        if self._loaded is None:
            self._loaded = load_for_generation(self.model, device=self.device)
        schema = self._bounded((request.get("response_format") or {}).get("json_schema", {}).get("schema"))
        replies = generate(self._loaded, [prompt], max_new_tokens=request.get("max_completion_tokens") or self.max_new_tokens,
                           temperature=request.get("temperature") or 0.0, top_p=request.get("top_p") or 1.0,
                           seed=request.get("seed") or 0, batch_size=1,
                           grammar=json_grammar(schema) if schema else None)
        return replies.texts[0]

    def _bounded(self, schema: dict[str, Any] | None) -> dict[str, Any] | None:
        steps = (schema or {}).get("properties", {}).get("steps")
        if steps is None:
            return schema
        text = {"type": "string", "maxLength": self.max_step_chars}
        bounded = {**steps, "maxItems": self.max_steps,
                   "items": {**steps["items"], "properties": {"description": text, "conclusion": text}}}
        return {**schema, "properties": {**schema["properties"], "steps": bounded}}


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    kinds = {part["type"] for part in content} - {"text"}
    if kinds:
        raise ValueError(f"the local grader model reads text only; this prompt has {', '.join(sorted(kinds))} "
                         "parts: pass a model_runner that calls a model which reads them")
    return "\n".join(part["text"] for part in content)
