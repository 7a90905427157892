"""Tool use and structured outputs on /v1/chat/completions.

The request's `tools`, `tool_choice` and `response_format` are checked first (a 400 naming the field
and the fix); then the grammar they call for: `tool_choice` "required" or a named function forces
`<tool_call>` blocks whose arguments match the declared `parameters`; `response_format` json_schema
or json_object forces JSON that the schema accepts (with tools on "auto": either). Tools on "auto"
leave the model free and its reply is read for calls; "none" leaves the tools out of the prompt and
the reply as it is. The reply's text becomes OpenAI's message (`content`, `tool_calls`) by the
parser `tunesmith generate` shares (models/tool_calls.py), whole or as stream deltas.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tunesmith.data.examples import Message, ToolCall
from tunesmith.errors import ModelError
from tunesmith.models.constrained import (
    Constraint,
    GrammarError,
    check_schema,
    json_grammar,
    tool_call_grammar,
)
from tunesmith.models.tool_calls import Delta, ParsedCall, parse_tool_calls
from tunesmith.serve.errors import APIError
from tunesmith.serve.models import Served
from tunesmith.serve.openai.schemas import ChatRequest, NamedToolChoice

_TOOL_SUPPORT: dict[str, bool] = {}  # chat template text -> whether it writes tools, calls and results


def check_request(body: ChatRequest) -> None:
    """Every problem of tools, tool_choice, response_format and tool messages as a 400 naming it."""
    names = [tool.function.name for tool in body.tools or ()]
    for name in names:
        if names.count(name) > 1:
            raise _invalid("tools", f"tools: `{name}` is declared {names.count(name)} times; declare each function once")
    choice = body.tool_choice
    if choice not in (None, "none") and not names:
        raise _invalid("tool_choice", "tool_choice needs tools: declare the functions it may call in `tools`")
    if isinstance(choice, NamedToolChoice) and choice.function.name not in names:
        raise _invalid("tool_choice", f"tool_choice names `{choice.function.name}`, which `tools` does not declare "
                                      f"(it declares {', '.join(f'`{n}`' for n in names)}); name one of those")
    schemas = [(f"tools.{i}.function.parameters", tool.function.parameters) for i, tool in enumerate(body.tools or ())
               if tool.function.parameters is not None]
    if body.response_format and body.response_format.json_schema and body.response_format.json_schema.schema_ is not None:
        schemas.append(("response_format.json_schema.schema", body.response_format.json_schema.schema_))
    for where, schema in schemas:
        try:
            check_schema(schema, where)
        except GrammarError as exc:
            raise _invalid(where, str(exc)) from exc
        except ModelError as exc:
            raise APIError(400, str(exc), param=where, code="unsupported_parameter") from exc
    _check_tool_messages(body)


def _check_tool_messages(body: ChatRequest) -> None:
    made: set[str] = set()
    for index, message in enumerate(body.messages):
        made.update(call.id for call in message.tool_calls or ())
        if message.role == "tool" and message.tool_call_id not in made:
            raise _invalid(f"messages.{index}.tool_call_id",
                           f"messages.{index}.tool_call_id: `{message.tool_call_id}` answers no tool call of an "
                           "earlier assistant message; send the assistant message with its tool_calls before it")


def _invalid(param: str, message: str) -> APIError:
    return APIError(400, message, param=param, code="invalid_value")


def parses_calls(body: ChatRequest) -> bool:
    """Whether the reply is read for tool calls."""
    return bool(body.tools) and body.tool_choice != "none"


def prompt_tools(body: ChatRequest) -> list[dict[str, Any]]:
    """The function list the chat template writes into the prompt (none when tool_choice is "none")."""
    if not parses_calls(body):
        return []
    return [tool.model_dump(exclude_none=True) for tool in body.tools]


def conversation(body: ChatRequest) -> list[Message]:
    """The request's messages as the chat template takes them (developer turns are system turns)."""
    return [Message("system" if m.role == "developer" else m.role, m.text(),
                    tool_calls=tuple(ToolCall(c.id, c.function.name, c.function.arguments) for c in m.tool_calls or ()),
                    tool_call_id=m.tool_call_id, name=m.name if m.role == "tool" else None)
            for m in body.messages]


def check_template(served: Served, body: ChatRequest, messages: list[Message]) -> None:
    """Tools, calls or results through a template that would silently drop them: a 400."""
    from tunesmith.data.template import supports_tools

    uses_tools = bool(prompt_tools(body)) or any(m.tool_calls or m.role == "tool" for m in messages)
    template = served.tokenizer.chat_template or ""
    if not uses_tools:
        return
    if template not in _TOOL_SUPPORT:
        _TOOL_SUPPORT[template] = supports_tools(served.tokenizer)
    if not _TOOL_SUPPORT[template]:
        param = "tools" if body.tools else "messages"
        raise APIError(400, f"{param}: the chat template of `{body.model}` has no tool support (it would drop the "
                            "function list, the calls and their results); serve a model whose template writes "
                            "them, such as tunesmith's default template (docs/templates.md)", param=param,
                       code="unsupported_parameter")


def output_grammar(body: ChatRequest) -> tuple[str, str] | None:
    """The grammar the reply must follow and the field that asks for it, or None (free text)."""
    tools = prompt_tools(body)
    choice = body.tool_choice or "auto"
    parallel = body.parallel_tool_calls is not False
    schema = _response_schema(body)
    if tools and choice == "required":
        return tool_call_grammar(tools, parallel=parallel), "tool_choice"
    if tools and isinstance(choice, NamedToolChoice):  # that function, called once
        named = [tool for tool in tools if tool["function"]["name"] == choice.function.name]
        return tool_call_grammar(named, parallel=False), "tool_choice"
    if schema is not None and tools:
        return tool_call_grammar(tools, parallel=parallel, or_json=schema), "response_format"
    if schema is not None:
        return json_grammar(schema), "response_format"
    return None


def _response_schema(body: ChatRequest) -> dict | None:
    wanted = body.response_format
    if wanted is None or wanted.type == "text":
        return None
    if wanted.type == "json_object":
        return {"type": "object"}
    return wanted.json_schema.schema_ if wanted.json_schema.schema_ is not None else {}


async def constraints_for(served: Served, body: ChatRequest) -> list[Constraint] | None:
    """A matcher for each choice (n), built off the event loop (the first one for a tokenizer takes
    about a second), or None when the reply is free."""
    grammar = output_grammar(body)
    if grammar is None:
        return None
    text, field = grammar
    stop_ids = served.info.stop_token_ids
    try:
        return await asyncio.to_thread(
            lambda: [Constraint(text, served.tokenizer, stop_ids) for _ in range(body.n)])
    except GrammarError as exc:
        raise _invalid(field, f"{field}: {exc.message}") from exc
    except ModelError as exc:
        raise APIError(400, str(exc), param=field, code="unsupported_parameter") from exc


def assistant_message(text: str, finish_reason: str | None, parse: bool) -> tuple[dict, str | None]:
    """OpenAI's reply message for a choice's text, and its finish_reason ("tool_calls" when it calls)."""
    if not parse:
        return {"role": "assistant", "content": text, "refusal": None}, finish_reason
    content, calls = parse_tool_calls(text)
    message: dict[str, Any] = {"role": "assistant", "content": content, "refusal": None}
    if calls:
        message["tool_calls"] = [call_object(call) for call in calls]
    return message, finish_reason_of(bool(calls), finish_reason)


def finish_reason_of(called: bool, finish_reason: str | None) -> str | None:
    return "tool_calls" if called and finish_reason == "stop" else finish_reason


def call_object(call: ParsedCall) -> dict:
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": call.arguments}}


def stream_delta(delta: Delta) -> dict:
    """One parser delta as a chunk's `delta`: a call's id, type and name first, then its arguments in pieces."""
    if delta.index is None:
        return {"content": delta.content}
    if delta.id is not None:
        return {"tool_calls": [{"index": delta.index, "id": delta.id, "type": "function",
                                "function": {"name": delta.name, "arguments": delta.arguments}}]}
    return {"tool_calls": [{"index": delta.index, "function": {"arguments": delta.arguments}}]}
