"""Tool calls in the text a model writes, in the Hermes / Qwen2.5 format that tunesmith's default
chat template trains (docs/templates.md): one block per call,

    <tool_call>
    {"name": "get_weather", "arguments": {"city": "Paris"}}
    </tool_call>

several blocks (one a line) for parallel calls, any text before them the reply's content.

One parser serves both a whole reply and a stream: `ToolCallStream` takes the text piece by piece
and says what is new (content, a call's name, a piece of its arguments), as OpenAI streams a reply;
`parse_tool_calls` is that stream fed the whole text at once, so a streamed reply adds up to the
reply given whole. A call's `arguments` is its JSON text exactly as the model wrote it.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass

OPEN, CLOSE = "<tool_call>", "</tool_call>"
# `{"name": "...", "arguments": ` up to the first character of the arguments: the order the
# templates write, so the name is known (and streamed) before the arguments are complete
_HEADER = re.compile(r'\s*\{\s*"name"\s*:\s*("(?:[^"\\]|\\.)*")\s*,\s*"arguments"\s*:\s*(?=\S)')
_DECODER = json.JSONDecoder()


def new_call_id() -> str:
    return f"call_{uuid.uuid4().hex[:24]}"


@dataclass
class ParsedCall:
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI's `function.arguments`


@dataclass(frozen=True)
class Delta:
    """What a piece of text added: content, or a call's start (index, id, name), or more of its arguments."""

    content: str = ""
    index: int | None = None  # the call this delta belongs to
    id: str | None = None  # set on a call's first delta only, with its name
    name: str | None = None
    arguments: str = ""


@dataclass
class _Block:
    body_start: int  # where the text after <tool_call> begins
    call: ParsedCall | None = None  # once the header is read
    index: int = -1
    arguments_start: int = 0  # in the block's body
    arguments_done: bool = False


class ToolCallStream:
    """Text in (`feed`, then `close` at its end), deltas out; `content` and `calls` add them up.

    Content is the text outside the blocks with its outer whitespace removed (whitespace held back
    until text follows it). A block whose JSON does not start with "name" then "arguments" is read
    once it closes; one that does not hold a call with a string name and object arguments stays
    content, as written."""

    def __init__(self) -> None:
        self.text = ""
        self.content = ""
        self.calls: list[ParsedCall] = []
        self._position = 0  # text before this is read
        self._block: _Block | None = None
        self._held = ""  # whitespace at the end of the content so far
        self._content_started = False

    def feed(self, text: str) -> list[Delta]:
        self.text += text
        return self._read(final=False)

    def close(self) -> list[Delta]:
        return self._read(final=True)

    def _read(self, *, final: bool) -> list[Delta]:
        deltas: list[Delta] = []
        while True:
            if self._block is None:
                start = self.text.find(OPEN, self._position)
                if start < 0:
                    safe = len(self.text) if final else len(self.text) - _partial_tag(self.text, self._position)
                    self._add_content(self.text[self._position:safe], deltas)
                    self._position = safe
                    return deltas
                self._add_content(self.text[self._position:start], deltas)
                self._block = _Block(start + len(OPEN))
                self._position = self._block.body_start
            end = self.text.find(CLOSE, self._block.body_start)
            if end < 0 and not final:
                self._read_block(self.text[self._block.body_start:], complete=False, closed=False, deltas=deltas)
                return deltas
            body_end = end if end >= 0 else len(self.text)
            self._read_block(self.text[self._block.body_start:body_end], complete=True, closed=end >= 0, deltas=deltas)
            self._block, self._position = None, (end + len(CLOSE) if end >= 0 else len(self.text))

    def _read_block(self, body: str, *, complete: bool, closed: bool, deltas: list[Delta]) -> None:
        block = self._block
        if block.call is None:
            header = _HEADER.match(body)
            if header is not None:
                self._start_call(block, json.loads(header.group(1)), deltas)
                block.arguments_start = header.end()
        if block.call is not None:
            self._read_arguments(block, body, complete, deltas)
        elif complete:
            whole = _whole_call(body)
            if whole is None:
                self._add_content(OPEN + body + (CLOSE if closed else ""), deltas)
                return
            self._start_call(block, whole[0], deltas)
            block.call.arguments = whole[1]
            deltas.append(Delta(index=block.index, arguments=whole[1]))

    def _start_call(self, block: _Block, name: str, deltas: list[Delta]) -> None:
        block.call, block.index = ParsedCall(new_call_id(), name, ""), len(self.calls)
        self.calls.append(block.call)
        deltas.append(Delta(index=block.index, id=block.call.id, name=name))

    def _read_arguments(self, block: _Block, body: str, complete: bool, deltas: list[Delta]) -> None:
        """Everything from the arguments' first character to the end of their JSON value: a value
        not finished yet is all arguments so far (an object ends only at its own closing brace)."""
        if block.arguments_done:
            return
        end = _value_end(body, block.arguments_start)
        upto = end if end is not None else len(body)
        sent = block.arguments_start + len(block.call.arguments)
        if upto > sent:
            piece = body[sent:upto]
            block.call.arguments += piece
            deltas.append(Delta(index=block.index, arguments=piece))
        block.arguments_done = end is not None or complete

    def _add_content(self, text: str, deltas: list[Delta]) -> None:
        if not self._content_started:
            text = text.lstrip()
            self._content_started = bool(text)
        joined = self._held + text
        kept = joined.rstrip()
        self._held = joined[len(kept):]
        if kept:
            self.content += kept
            deltas.append(Delta(content=kept))


def parse_tool_calls(text: str) -> tuple[str | None, list[ParsedCall]]:
    """A whole reply's content (None when empty) and the calls it makes."""
    stream = ToolCallStream()
    stream.feed(text)
    stream.close()
    return stream.content or None, stream.calls


def _partial_tag(text: str, start: int) -> int:
    """How many characters at the end of `text` (after `start`) may be the beginning of <tool_call>."""
    for length in range(min(len(OPEN) - 1, len(text) - start), 0, -1):
        if text.endswith(OPEN[:length]):
            return length
    return 0


def _value_end(text: str, start: int) -> int | None:
    """Where the JSON value at `start` ends, or None while it is unfinished (or not JSON)."""
    try:
        return _DECODER.raw_decode(text, start)[1]
    except ValueError:
        return None


def _whole_call(body: str) -> tuple[str, str] | None:
    """(name, arguments JSON text) of a block's JSON object in another key order, or None."""
    try:
        call = json.loads(body)
    except ValueError:
        return None
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not isinstance(call.get("arguments"), dict):
        return None
    return call["name"], json.dumps(call["arguments"], ensure_ascii=False)
