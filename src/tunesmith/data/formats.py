"""Row formats people actually have, detected from their fields and converted into examples.

Each format is registered with one call next to its converter; outside code can add its own with
`register_format`. A converter never drops or rewrites what it cannot use: it reports it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from tunesmith.data.examples import ROLES, Example, Message, Problem, RowProblems
from tunesmith.data.read import Record
from tunesmith.data.tools import (
    argument_checkers,
    check_call,
    check_tool_use,
    function_call_message,
    llamafactory_tools,
    observation_messages,
    parse_tool_calls,
    parse_tools,
)

Converter = Callable[[dict[str, Any], RowProblems, Record], Example | None]


@dataclass(frozen=True)
class RowFormat:
    name: str
    fields: tuple[str, ...]  # all present -> a row is of this format (checked by priority, then registration order)
    optional: tuple[str, ...]
    convert: Converter
    example: str  # one row, shown in error messages
    priority: int = 0  # lower is checked first: preference rows also have a prompt or conversations


FORMATS: dict[str, RowFormat] = {}


def register_format(
    name: str, fields: tuple[str, ...], optional: tuple[str, ...], example: str, priority: int = 0
) -> Callable[[Converter], Converter]:
    def decorate(convert: Converter) -> Converter:
        FORMATS[name] = RowFormat(name, fields, optional, convert, example, priority)
        return convert

    return decorate


def detect_format(record: dict[str, Any]) -> str | None:
    for row_format in sorted(FORMATS.values(), key=lambda f: f.priority):
        if all(key in record for key in row_format.fields):
            return row_format.name
    return None


def choose_format(records: list[Record], requested: str, columns: dict[str, str] | None = None) -> str | None:
    """The file's format: the one asked for, else the most common one among readable rows (after
    renaming the user's columns)."""
    if requested != "auto":
        return requested
    renamed = ({**{k: v for k, v in r.data.items() if k not in (columns or {}).values()},
                **{field: r.data[column] for field, column in (columns or {}).items() if column in r.data}}
               for r in records if r.data is not None)
    counts = Counter(detect_format(data) for data in renamed)
    counts.pop(None, None)
    return counts.most_common(1)[0][0] if counts else None


def apply_columns(data: dict[str, Any], columns: dict[str, str], problems: RowProblems) -> dict[str, Any]:
    """Rename the user's columns to the fields tunesmith expects (`data.columns`)."""
    if not columns:
        return data
    renamed = dict(data)
    for expected, column in columns.items():
        if column not in data:
            problems.add(
                f"column '{column}' (mapped to '{expected}' by data.columns) is missing",
                f"the row has {_field_list(data)}; fix data.columns.{expected}",
            )
            continue
        renamed[expected] = renamed.pop(column) if column != expected else data[column]
    return renamed


def convert_records(
    records: list[Record], format_name: str | None, columns: dict[str, str]
) -> tuple[list[Example], list[Problem]]:
    """Examples from records, and every problem found, each naming its file and line."""
    examples: list[Example] = []
    problems: list[Problem] = []
    for record in records:
        row_problems = RowProblems(record.where)
        if record.error:
            row_problems.add(record.error)
        elif format_name is None:
            row_problems.add(
                f"no known fields (the row has {_field_list(record.data)})",
                "use messages, instruction/output, conversations, prompt/completion or text, "
                "or map your columns with data.columns (e.g. --set data.columns.prompt=question)",
            )
        else:
            data = apply_columns(record.data, columns, row_problems)
            row_format = FORMATS[format_name]
            missing = [key for key in row_format.fields if key not in data]
            if missing and not row_problems:
                row_problems.add(
                    f"missing field '{missing[0]}' for {format_name} rows (the row has {_field_list(data)})",
                    f"write rows like {row_format.example}, or map a column with data.columns.{missing[0]}=NAME",
                )
            elif not row_problems:
                example = row_format.convert(data, row_problems, record)
                if example is not None and not row_problems:
                    examples.append(example)
        problems.extend(row_problems.items)
    return examples, problems


def with_system_prompt(example: Example, system_prompt: str | None) -> Example:
    """The example with `system_prompt` first, unless it has no messages or has a system message.
    Everything else on it stays (a label row's text and label)."""
    if not system_prompt or not example.messages or example.messages[0].role == "system":
        return example
    return replace(example, messages=(Message("system", system_prompt),) + example.messages)


# ---------------------------------------------------------------------------------------- formats


@register_format(
    "chat", ("messages",), ("tools",),
    '{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]}',
)
def convert_chat(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    """OpenAI's chat rows, with `tools` and the assistant's `tool_calls` answered by `tool` messages."""
    raw = data["messages"]
    if not isinstance(raw, list) or not raw:
        problems.add("'messages' must be a non-empty list of {role, content} objects", "fix the row")
        return None
    tools = parse_tools(data["tools"], problems) if data.get("tools") is not None else ()
    messages = [message for number, item in enumerate(raw, start=1)
                if (message := _chat_message(item, number, problems)) is not None]
    if problems:
        return None
    check_tool_use(messages, tools, problems)
    if messages[-1].role == "user":  # OpenAI's reinforcement rows: a prompt, and the fields its grader reads
        check_conversation([*messages, Message("assistant", "(reply)")], problems)
        return None if problems else Example(record.source, record.line, "prompt", messages=tuple(messages),
                                             tools=tools, fields=dict(data))
    check_conversation(messages, problems)
    return None if problems else Example(record.source, record.line, "chat", messages=tuple(messages), tools=tools)


def openai_messages(raw: list[dict[str, Any]], where: str = "messages") -> list[Message]:
    """Messages in OpenAI's chat format (tool calls and tool results included) as Messages; a
    DataError naming each problem."""
    problems = RowProblems(where)
    messages = [message for number, item in enumerate(raw, start=1)
                if (message := _chat_message(item, number, problems)) is not None]
    if problems:
        from tunesmith.errors import DataError

        raise DataError(f"{where}: messages that are not OpenAI's chat format", problems.items)
    return messages


def _chat_message(item: Any, number: int, problems: RowProblems) -> Message | None:
    if not isinstance(item, dict):
        problems.add(f"message {number} is a {type(item).__name__}, not an object", 'write it as {"role": ..., "content": ...}')
        return None
    role = item.get("role")
    if role == "function" or "function_call" in item:
        problems.add(f"message {number} uses OpenAI's deprecated function calling ('function_call' / role 'function')",
                     'write calls as "tool_calls" on the assistant message and each result as '
                     '{"role": "tool", "tool_call_id": ..., "content": ...}')
        return None
    calls = parse_tool_calls(item["tool_calls"], number, problems) if item.get("tool_calls") else ()
    if item.get("tool_calls") and not calls:
        return None  # every call was malformed, and is reported
    if calls and role != "assistant":
        problems.add(f"message {number} is '{role}' but has tool_calls", "only assistant messages make tool calls")
        return None
    if role is None or ("content" not in item and not calls):
        missing = "role" if role is None else "content"
        problems.add(f"message {number} has no '{missing}'", f'give every message "role" and "content" (it has {_field_list(item)})')
        return None
    content = "" if item.get("content") is None and calls else _content_text(item["content"], number, problems)
    if content is None:
        return None
    weight = item.get("weight", 1)
    if weight not in (0, 1):
        problems.add(f"message {number} has weight {weight!r}", "use 1 (train on this reply) or 0 (skip it)")
        return None
    tool_call_id, name = (item.get("tool_call_id"), item.get("name")) if role == "tool" else (None, None)
    if not isinstance(tool_call_id, (str, type(None))) or not isinstance(name, (str, type(None))):
        problems.add(f"message {number} has a 'tool_call_id' or 'name' that is not text",
                     "write the id of the call it answers (and the function's name) as strings")
        return None
    return Message(str(role), content, train=weight == 1, tool_calls=calls, tool_call_id=tool_call_id, name=name)


SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "model": "assistant", "bot": "assistant", "chatgpt": "assistant", "system": "system"}


@register_format(
    "sharegpt", ("conversations",), ("system", "tools"),
    '{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello!"}]}',
)
def convert_sharegpt(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    """ShareGPT rows, with LLaMA-Factory's function_call / observation turns and `tools`."""
    raw = data["conversations"]
    if not isinstance(raw, list) or not raw:
        problems.add("'conversations' must be a non-empty list of {from, value} objects", "fix the row")
        return None
    tools = llamafactory_tools(data["tools"], problems) if data.get("tools") is not None else ()
    messages = sharegpt_messages(raw, data.get("system"), problems, tools)
    if problems:
        return None
    check_conversation(messages, problems)
    return None if problems else Example(record.source, record.line, "chat", messages=tuple(messages), tools=tools)


TOOL_SPEAKERS = ("function_call", "observation")  # LLaMA-Factory's tool turns


def sharegpt_messages(raw: list, system: Any, problems: RowProblems, tools: tuple[dict[str, Any], ...] = ()) -> list[Message]:
    """ShareGPT turns ({from, value}) as messages, with an optional top-level system prompt; with
    LLaMA-Factory's tool turns, each call is checked against `tools` as it is read."""
    messages: list[Message] = []
    previous = None  # the speaker of the turn before
    if system:
        if not isinstance(system, str):
            problems.add("'system' must be text", "fix the row")
            return []
        messages.append(Message("system", system))
    for number, item in enumerate(raw, start=1):
        if not isinstance(item, dict):
            problems.add(f"turn {number} is a {type(item).__name__}, not an object", 'write it as {"from": ..., "value": ...}')
            continue
        speaker = item.get("from", item.get("role"))
        value = item.get("value", item.get("content"))
        if speaker is None or value is None:
            problems.add(f"turn {number} needs 'from' and 'value'", f"it has {_field_list(item)}")
            continue
        speaker, follows_call = str(speaker).lower(), previous == "function_call"
        previous = speaker
        if follows_call and speaker != "observation":
            problems.add(f"turn {number} follows a function_call turn whose calls no observation answers",
                         "put the observation (the tool's result) right after the function_call turn")
        if speaker in TOOL_SPEAKERS:
            messages += _tool_turn(speaker, value, number, messages, tools, problems, follows_call)
            continue
        role = SHAREGPT_ROLES.get(speaker)
        if role is None:
            known = ", ".join(sorted((*SHAREGPT_ROLES, *TOOL_SPEAKERS)))
            problems.add(f"turn {number} is from '{speaker}', which is not a known speaker", f"use one of {known}")
            continue
        text = _content_text(value, number, problems)
        if text is not None:
            messages.append(Message(role, text))
    return messages


def _tool_turn(speaker: str, value: Any, number: int, messages: list[Message], tools: tuple[dict[str, Any], ...],
               problems: RowProblems, follows_call: bool) -> list[Message]:
    """A function_call turn as an assistant message with calls, an observation as tool messages."""
    if not isinstance(value, str):
        problems.add(f"turn {number} ({speaker}) is a {type(value).__name__}, not text", "write its value as JSON text")
        return []
    if speaker == "observation":
        if follows_call and not (messages and messages[-1].tool_calls):
            return []  # the function_call turn before it was bad, and is reported
        return observation_messages(value, number, messages[-1] if follows_call else None, problems)
    made = sum(len(message.tool_calls) for message in messages)
    message = function_call_message(value, number, made + 1, problems)
    if message is None:
        return []
    checkers = argument_checkers(tools)
    for call in message.tool_calls:
        check_call(call, f"turn {number}", checkers, problems)
    return [message]


@register_format(
    "alpaca", ("instruction", "output"), ("input", "system", "history"),
    '{"instruction": "Summarize:", "input": "text ...", "output": "summary ..."}',
)
def convert_alpaca(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    fields = {name: data.get(name) for name in ("instruction", "input", "output", "system")}
    for name, value in fields.items():
        if value is not None and not isinstance(value, str):
            problems.add(f"'{name}' is a {type(value).__name__}, not text", f"make '{name}' a string")
    if problems:
        return None
    if not (fields["instruction"] or "").strip():
        problems.add("'instruction' is empty", "write the instruction or remove the row")
    if not (fields["output"] or "").strip():
        problems.add("'output' is empty: there is no answer to learn", "write the answer or remove the row")
    if problems:
        return None
    messages = [Message("system", fields["system"])] if fields["system"] else []
    for number, pair in enumerate(data.get("history") or [], start=1):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(t, str) for t in pair)):
            problems.add(f"history item {number} is not a [question, answer] pair of strings", "fix the history")
            return None
        messages += [Message("user", pair[0]), Message("assistant", pair[1])]
    prompt = fields["instruction"]
    if (fields["input"] or "").strip():
        prompt = f"{prompt}\n\n{fields['input']}"
    messages += [Message("user", prompt), Message("assistant", fields["output"])]
    check_conversation(messages, problems)
    return None if problems else Example(record.source, record.line, "chat", messages=tuple(messages))


@register_format(
    "prompt_completion", ("prompt", "completion"), (),
    '{"prompt": "Translate to French: cheese =>", "completion": " fromage"}',
)
def convert_prompt_completion(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    prompt, completion = data["prompt"], data["completion"]
    if isinstance(prompt, list):
        # Conversational prompt-completion (TRL's shape): the chat template applies.
        chat = {"messages": list(prompt) + (completion if isinstance(completion, list) else
                                            [{"role": "assistant", "content": completion}])}
        return convert_chat(chat, problems, record)
    if not isinstance(prompt, str) or not isinstance(completion, str):
        problems.add("'prompt' and 'completion' must be text (or lists of chat messages)", "fix the row")
        return None
    if not completion.strip():
        problems.add("'completion' is empty: there is nothing to learn", "write the completion or remove the row")
        return None
    return Example(record.source, record.line, "completion", prompt=prompt, completion=completion)


@register_format("prompt", ("prompt",), ("system",), '{"prompt": "Explain photosynthesis."}', priority=1)
def convert_prompt(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    """A prompt with no reply, for on-policy preference tuning (the model writes the replies)."""
    prompt = data["prompt"]
    messages = [Message("user", prompt)] if isinstance(prompt, str) else _prompt_messages(prompt, problems) \
        if isinstance(prompt, list) else None
    if messages is None:
        problems.add("'prompt' must be text or a list of messages", "fix the row")
    if problems:
        return None
    if data.get("system"):
        messages.insert(0, Message("system", str(data["system"])))
    check_conversation([*messages, Message("assistant", "(reply)")], problems)
    return None if problems else Example(record.source, record.line, "prompt", messages=tuple(messages),
                                         fields=dict(data))


@register_format("label", ("text", "label"), (), '{"text": "a gripping film", "label": "positive"}')
def convert_label(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    text, label = data["text"], data["label"]
    if not isinstance(text, str) or not text.strip():
        problems.add("'text' is empty or not text", "write the text to classify or remove the row")
    if isinstance(label, bool) or not isinstance(label, (str, int, float)) or not str(label).strip():
        problems.add(f"'label' is {label!r}", "give every row a label (text or a number)")
    if problems:
        return None
    label = str(int(label)) if isinstance(label, float) and label.is_integer() else str(label).strip()
    return Example(record.source, record.line, "label", text=text, label=label)


@register_format("text", ("text",), (), '{"text": "A document of the domain ..."}')
def convert_text(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    text = data["text"]
    if not isinstance(text, str):
        problems.add(f"'text' is a {type(text).__name__}, not text", "make 'text' a string")
        return None
    if not text.strip():
        problems.add("'text' is empty", "remove the row")
        return None
    return Example(record.source, record.line, "text", text=text)


@register_format(
    "preference", ("chosen", "rejected"), ("prompt", "conversations", "messages", "system"),
    '{"prompt": "Write a haiku", "chosen": "a good haiku", "rejected": "a worse one"}', priority=-1,
)
def convert_preference(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    """prompt (text or messages) / conversations (ShareGPT) / messages, plus chosen and rejected."""
    prompt = data.get("prompt", data.get("conversations", data.get("messages")))
    if prompt is None:
        problems.add("no prompt: a preference row needs 'prompt' (or 'conversations' / 'messages') besides "
                     "'chosen' and 'rejected'", "add the prompt the two replies answer")
        return None
    if isinstance(prompt, str):
        messages = [Message("user", prompt)]
    elif isinstance(prompt, list) and prompt:
        sharegpt = isinstance(prompt[0], dict) and "from" in prompt[0]
        messages = sharegpt_messages(prompt, data.get("system"), problems) if sharegpt else _prompt_messages(prompt, problems)
        if problems:
            return None
    else:
        problems.add("the prompt must be text or a list of messages", "fix the row")
        return None
    return _preference_example(messages, data["chosen"], data["rejected"], problems, record)


@register_format(
    "openai_preference", ("preferred_output", "non_preferred_output"), ("input",),
    '{"input": {"messages": [{"role": "user", "content": "Hi"}]}, "preferred_output": '
    '[{"role": "assistant", "content": "Hello!"}], "non_preferred_output": [{"role": "assistant", "content": "Go away."}]}',
    priority=-1,
)
def convert_openai_preference(data: dict[str, Any], problems: RowProblems, record: Record) -> Example | None:
    """OpenAI's preference fine-tuning rows."""
    source = data.get("input")
    if not isinstance(source, dict) or not isinstance(source.get("messages"), list):
        problems.add("'input' must be an object with a 'messages' list", 'write {"input": {"messages": [...]}, ...}')
        return None
    messages = _prompt_messages(source["messages"], problems)
    if problems:
        return None
    return _preference_example(messages, data["preferred_output"], data["non_preferred_output"], problems, record)


def _prompt_messages(raw: list, problems: RowProblems) -> list[Message]:
    messages = []
    for number, item in enumerate(raw, start=1):
        if not isinstance(item, dict) or "role" not in item or "content" not in item:
            problems.add(f"prompt message {number} needs 'role' and 'content'", "fix the prompt")
            return []
        text = _content_text(item["content"], number, problems)
        if text is None:
            return []
        messages.append(Message(str(item["role"]), text))
    return messages


def _reply_text(value: Any, name: str, problems: RowProblems) -> str | None:
    """A reply given as text, {from/role, value/content}, or a list holding one assistant message."""
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        value = value.get("value", value.get("content"))
    if not isinstance(value, str):
        problems.add(f"'{name}' must be text or one assistant message", "fix the row")
        return None
    if not value.strip():
        problems.add(f"'{name}' is empty", "write the reply or remove the row")
        return None
    return value


def _preference_example(messages: list[Message], chosen: Any, rejected: Any, problems: RowProblems,
                        record: Record) -> Example | None:
    chosen_text, rejected_text = _reply_text(chosen, "chosen", problems), _reply_text(rejected, "rejected", problems)
    if problems:
        return None
    if chosen_text.strip() == rejected_text.strip():
        problems.add("'chosen' and 'rejected' are the same reply, so the pair teaches nothing", "fix or remove the row")
        return None
    check_conversation([*messages, Message("assistant", chosen_text)], problems)
    if problems:
        return None
    return Example(record.source, record.line, "preference", messages=tuple(messages), chosen=chosen_text,
                   rejected=rejected_text)


# ---------------------------------------------------------------------------------------- checks


CHAT_ROLES = (*ROLES, "tool")


def check_conversation(messages: list[Message], problems: RowProblems) -> None:
    """Roles known; optional system first; then user and assistant alternate, except that an assistant
    turn with tool calls may be followed by another assistant turn once the tool results (`tool`
    messages, which tools.check_tool_use matches to the calls) are in; ends with an assistant turn."""
    for number, message in enumerate(messages, start=1):
        if message.role not in CHAT_ROLES:
            problems.add(f"message {number} has role '{message.role}'", f"use one of {', '.join(CHAT_ROLES)}")
    if problems:
        return
    first = 1 if messages and messages[0].role == "system" else 0
    turns = [(number, m) for number, m in enumerate(messages, start=1) if number > first and m.role != "tool"]
    for index, (number, message) in enumerate(turns):
        previous = turns[index - 1][1] if index else None
        expected = ("user", "assistant") if previous is not None and previous.tool_calls else \
            ("assistant" if previous is not None and previous.role == "user" else "user",)
        if message.role == "system":
            problems.add(f"message {number} is a system message after the conversation started", "move it to the start or merge it into the first system message")
            return
        if message.role not in expected:
            problems.add(
                f"message {number} is '{message.role}' after {repr(previous.role) if index else 'the start'}: roles must alternate user, assistant",
                "merge the consecutive messages or add the missing turn" if index else "start the conversation with a user message",
            )
            return
        if not message.content.strip() and not message.tool_calls:
            what = "an empty assistant turn" if message.role == "assistant" else "an empty user message"
            problems.add(f"message {number} is {what}", "write its text or remove the row")
    if problems:
        return
    if not turns or messages[-1].role != "assistant":
        problems.add(
            "the conversation does not end with an assistant reply, so there is nothing to learn",
            "add the assistant's reply or remove the trailing message",
        )
    elif not any(m.train for _, m in turns if m.role == "assistant"):
        problems.add("every assistant reply has weight 0, so there is nothing to learn", "set weight 1 on at least one reply")


def _content_text(content: Any, number: int, problems: RowProblems) -> str | None:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # OpenAI content parts
        texts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str):
                texts.append(part["text"])
            else:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                problems.add(f"message {number} has a '{kind}' content part; only text is supported", "remove non-text parts")
                return None
        return "".join(texts)
    problems.add(f"message {number} content is a {type(content).__name__}, not text", "make the content a string")
    return None


def _field_list(data: Any) -> str:
    if not isinstance(data, dict) or not data:
        return "no fields"
    names = list(data)
    shown = ", ".join(map(str, names[:8]))
    return f"fields {shown}" + (f" and {len(names) - 8} more" if len(names) > 8 else "")


__all__ = ["FORMATS", "Problem", "choose_format", "convert_records", "register_format", "detect_format", "with_system_prompt"]
