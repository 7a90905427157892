"""Tool use in rows: the functions a row declares, the calls its assistant makes, and their results.

Two row shapes carry tool use. OpenAI's chat rows: `tools` (a list of function schemas), assistant
messages with `tool_calls` (several per turn allowed), then one `tool` message per call, naming the
call it answers by `tool_call_id`. LLaMA-Factory's ShareGPT rows: `function_call` turns (JSON
`{"name", "arguments"}` or a list of them) and `observation` turns, with `tools` a JSON string of the
function list. Both become the same messages (OpenAI's shape), which the chat template renders.

Each call is checked against the declared tools: the name must be declared, the arguments must be a
JSON object that the tool's `parameters` schema accepts (`jsonschema`, the draft the schema names).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from jsonschema import exceptions as schema_errors
from jsonschema import validators

from tunesmith.data.examples import Message, RowProblems, ToolCall

TOOLS_FIX = ('write tools as [{"type": "function", "function": {"name": "get_weather", "description": "...", '
             '"parameters": {"type": "object", "properties": {...}}}}]')
CALL_FIX = ('write each call as {"id": "call_1", "type": "function", "function": {"name": "get_weather", '
            '"arguments": "{\\"city\\": \\"Paris\\"}"}}')
# LLaMA-Factory joins the results of several calls into one observation turn with this (its OpenAI converter)
RESULT_SEPARATOR = "\n</tool_response>\n<tool_response>\n"


def parse_tools(raw: Any, problems: RowProblems) -> tuple[dict[str, Any], ...]:
    """OpenAI's `tools`, as given, once each entry is a function with a unique name and a valid JSON
    schema for its parameters (which OpenAI lets a function without arguments leave out)."""
    if not isinstance(raw, list):
        problems.add(f"'tools' is a {type(raw).__name__}, not a list of function declarations", TOOLS_FIX)
        return ()
    before = len(problems.items)
    names: set[str] = set()
    for number, tool in enumerate(raw, start=1):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(tool, dict) or tool.get("type") != "function" or not isinstance(function, dict):
            bare = isinstance(tool, dict) and "name" in tool and "function" not in tool
            what = "a bare function: wrap it as {\"type\": \"function\", \"function\": {...}}" if bare else TOOLS_FIX
            problems.add(f"tool {number} in 'tools' is not a function declaration", what)
            continue
        _check_function(function, number, names, problems)
    return tuple(raw) if len(problems.items) == before else ()


def _check_function(function: dict[str, Any], number: int, names: set[str], problems: RowProblems) -> None:
    name = function.get("name")
    if not isinstance(name, str) or not name.strip():
        problems.add(f"tool {number} in 'tools' has no name", TOOLS_FIX)
        return
    if name in names:
        problems.add(f"tool {number} in 'tools' declares '{name}' a second time", "declare each function once")
    names.add(name)
    parameters = function.get("parameters")
    if parameters is None:
        return
    if not isinstance(parameters, dict):
        problems.add(f"tool '{name}' has parameters that are a {type(parameters).__name__}, not a JSON schema",
                     'write "parameters": {"type": "object", "properties": {...}, "required": [...]}')
        return
    try:
        validators.validator_for(parameters).check_schema(parameters)
    except schema_errors.SchemaError as error:
        problems.add(f"tool '{name}' has parameters that are not a valid JSON schema ({error.message})",
                     "fix the schema (https://json-schema.org)")


def parse_tool_calls(raw: Any, number: int, problems: RowProblems) -> tuple[ToolCall, ...]:
    """An OpenAI assistant message's `tool_calls`. `arguments` is JSON text as OpenAI sends it; an object
    (as transformers' chat-template examples write it) is taken as the same JSON."""
    if not isinstance(raw, list):
        problems.add(f"message {number} has 'tool_calls' that is a {type(raw).__name__}, not a list", CALL_FIX)
        return ()
    calls = []
    for index, item in enumerate(raw, start=1):
        function = item.get("function") if isinstance(item, dict) else None
        where = f"message {number} tool call {index}"
        if not isinstance(function, dict) or item.get("type", "function") != "function":
            problems.add(f"{where} is not a function call", CALL_FIX)
            continue
        call_id, name, arguments = item.get("id"), function.get("name"), function.get("arguments")
        if not isinstance(call_id, str) or not call_id:
            problems.add(f"{where} has no 'id' (a non-empty string)",
                         "give each call an id; the tool message answering it repeats it as tool_call_id")
        elif not isinstance(name, str) or not name:
            problems.add(f"{where} has no function name", CALL_FIX)
        elif arguments is None:
            problems.add(f"{where} ('{name}') has no 'arguments'", 'write "arguments": "{}" for a call without arguments')
        else:
            text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
            calls.append(ToolCall(call_id, name, text))
    return tuple(calls)


def argument_checkers(tools: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Declared function name -> a validator of its parameters (None: the function declares none)."""
    checkers: dict[str, Any] = {}
    for tool in tools:
        schema = tool["function"].get("parameters")
        checkers[tool["function"]["name"]] = validators.validator_for(schema)(schema) if schema else None
    return checkers


def check_call(call: ToolCall, where: str, checkers: dict[str, Any], problems: RowProblems) -> None:
    """The call names a declared tool, with arguments that are a JSON object its schema accepts."""
    if call.name not in checkers:
        declared = f"the row declares {', '.join(sorted(checkers))}" if checkers else "the row has no 'tools'"
        problems.add(f"{where} calls '{call.name}', which is not a declared tool ({declared})",
                     "add the function to the row's 'tools' or fix the name")
        return
    try:
        arguments = json.loads(call.arguments)
    except ValueError as error:
        problems.add(f"{where} calls '{call.name}' with arguments that are not valid JSON ({error})",
                     'write the arguments as a JSON object, e.g. "{\\"city\\": \\"Paris\\"}"')
        return
    if not isinstance(arguments, dict):
        problems.add(f"{where} calls '{call.name}' with arguments that are a JSON {type(arguments).__name__}, not an object",
                     "write the arguments as a JSON object of named values")
        return
    checker = checkers[call.name]
    error = schema_errors.best_match(checker.iter_errors(arguments)) if checker else None
    if error is not None:
        at = f" at '{'.'.join(map(str, error.absolute_path))}'" if error.absolute_path else ""
        problems.add(f"{where} calls '{call.name}' with arguments that do not match its parameters{at}: {error.message}",
                     "fix the arguments or the tool's parameters schema")


def check_tool_use(messages: Sequence[Message], tools: Sequence[dict[str, Any]], problems: RowProblems) -> None:
    """Every call is to a declared tool with valid arguments and a unique id; every tool message answers
    a call of the assistant turn just before it; no call is left unanswered when the conversation goes on
    (a conversation may end on calls: the model learns to make them)."""
    checkers = argument_checkers(tools)
    pending: dict[str, tuple[int, ToolCall]] = {}  # calls of the last assistant turn not answered yet
    ids: set[str] = set()
    for number, message in enumerate(messages, start=1):
        if message.role == "tool":
            _check_answer(message, number, pending, problems)
            continue
        _report_unanswered(pending, number, problems)
        pending = {}
        for call in message.tool_calls:
            if call.id in ids:
                problems.add(f"message {number} reuses the tool call id '{call.id}'", "give every call in the row its own id")
            ids.add(call.id)
            check_call(call, f"message {number}", checkers, problems)
            pending[call.id] = (number, call)


def _check_answer(message: Message, number: int, pending: dict[str, tuple[int, ToolCall]], problems: RowProblems) -> None:
    if message.tool_call_id is None:
        problems.add(f"message {number} is a tool result with no 'tool_call_id', so it answers no tool call",
                     "give it the id of the call it answers")
        return
    if message.tool_call_id not in pending:
        open_ids = ", ".join(f"'{key}'" for key in pending)
        problems.add(f"message {number} answers tool call '{message.tool_call_id}', which no assistant turn just before it made "
                     "(or another tool message answered already)",
                     f"use the id of an open call ({open_ids})" if open_ids else "put it after the assistant turn whose call it answers")
        return
    _, call = pending.pop(message.tool_call_id)
    if message.name is not None and message.name != call.name:
        problems.add(f"message {number} is named '{message.name}' but answers a call to '{call.name}'",
                     "fix the name or the tool_call_id")


def _report_unanswered(pending: dict[str, tuple[int, ToolCall]], number: int, problems: RowProblems) -> None:
    for call_id, (made_in, call) in pending.items():
        problems.add(f"message {made_in} calls '{call.name}' (id '{call_id}'), which no tool message answers before message {number}",
                     f'add {{"role": "tool", "tool_call_id": "{call_id}", "content": ...}} right after message {made_in}')


# ------------------------------------------------------------------------ LLaMA-Factory's ShareGPT


def llamafactory_tools(raw: Any, problems: RowProblems) -> tuple[dict[str, Any], ...]:
    """LLaMA-Factory's `tools`: a JSON string (or a list) of functions, bare `{name, description,
    parameters}` or OpenAI's `{"type": "function", "function": {...}}`, as OpenAI's list."""
    if isinstance(raw, str):
        if not raw.strip():
            return ()
        try:
            raw = json.loads(raw)
        except ValueError as error:
            problems.add(f"'tools' is not valid JSON ({error})", "write 'tools' as a JSON list of functions")
            return ()
    if not isinstance(raw, list):
        problems.add(f"'tools' holds a {type(raw).__name__}, not a list of functions",
                     'write it as a JSON list: [{"name": ..., "description": ..., "parameters": {...}}]')
        return ()
    wrapped = [tool if isinstance(tool, dict) and "function" in tool else {"type": "function", "function": tool}
               for tool in raw]
    return parse_tools(wrapped, problems)


def function_call_message(value: str, number: int, first_id: int, problems: RowProblems) -> Message | None:
    """A `function_call` turn as an assistant message with its calls; ids are call_1, call_2, ...
    counted over the row (LLaMA-Factory's rows have none; observations answer by position)."""
    try:
        parsed = json.loads(value)
    except ValueError as error:
        problems.add(f"turn {number} (function_call) is not valid JSON ({error})",
                     'write it as {"name": "get_weather", "arguments": {"city": "Paris"}} or a list of such calls')
        return None
    calls = []
    for offset, item in enumerate(parsed if isinstance(parsed, list) else [parsed]):
        if not isinstance(item, dict) or not isinstance(item.get("name"), str) or "arguments" not in item:
            problems.add(f"turn {number} (function_call) has a call without 'name' and 'arguments'",
                         'write each call as {"name": "get_weather", "arguments": {"city": "Paris"}}')
            return None
        arguments = item["arguments"]
        text = arguments if isinstance(arguments, str) else json.dumps(arguments, ensure_ascii=False)
        calls.append(ToolCall(f"call_{first_id + offset}", item["name"], text))
    if not calls:
        problems.add(f"turn {number} (function_call) holds no call", "write the call or remove the turn")
        return None
    return Message("assistant", "", tool_calls=tuple(calls))


def observation_messages(value: str, number: int, previous: Message | None, problems: RowProblems) -> list[Message]:
    """An `observation` turn as one tool message per call of the function_call turn before it; the
    results of several calls are separated as LLaMA-Factory joins them."""
    calls = previous.tool_calls if previous is not None else ()
    if not calls:
        problems.add(f"turn {number} is an observation with no function_call turn right before it",
                     "put the function_call turn it answers right before it, or remove it")
        return []
    results = value.split(RESULT_SEPARATOR) if len(calls) > 1 else [value]
    if len(results) != len(calls):
        problems.add(f"turn {number} holds {len(results)} result(s) for the {len(calls)} calls of the turn before it",
                     f"write one result per call, in order, separated by {RESULT_SEPARATOR!r}")
        return []
    return [Message("tool", result, tool_call_id=call.id) for call, result in zip(calls, results)]


def file_uses_tools(source: str | None) -> bool:
    """Whether a data file's rows declare tools or make calls (its first 200 rows), read before the
    data loads, so the chat template can be chosen for them (template.ensure_chat_template)."""
    if not source:
        return False
    from tunesmith.data.catalog import resolve_data_path
    from tunesmith.data.read import read_records

    path = resolve_data_path(source)
    if not path.is_file():
        return False
    rows = [record.data for record in read_records(path)[:200] if isinstance(record.data, dict)]
    return any(row.get("tools") or any(isinstance(m, dict) and (m.get("tool_calls") or m.get("from") == "function_call")
                                       for m in row.get("messages") or row.get("conversations") or [])
               for row in rows)
