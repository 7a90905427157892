"""The shapes data takes between a file and token ids: examples, messages, and problems with rows."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

ROLES = ("system", "user", "assistant")  # and "tool": a tool's result, answering an assistant's call


@dataclass(frozen=True)
class ToolCall:
    """One function call an assistant turn makes (OpenAI's `tool_calls[i]`)."""

    id: str
    name: str
    arguments: str  # the arguments as JSON text, as OpenAI sends them

    def as_dict(self) -> dict[str, Any]:
        """The call as chat templates read it: `arguments` parsed to an object (Qwen's, Hermes' and
        Llama's templates write `arguments | tojson`), the raw text when it is not JSON."""
        try:
            arguments: Any = json.loads(self.arguments)
        except ValueError:
            arguments = self.arguments
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": arguments}}


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    train: bool = True  # assistant turns only: False keeps the turn out of the loss (OpenAI's weight: 0)
    tool_calls: tuple[ToolCall, ...] = ()  # assistant turns: the functions it calls
    tool_call_id: str | None = None  # tool turns: the call this result answers
    name: str | None = None  # tool turns: the function whose result this is

    def as_dict(self) -> dict[str, Any]:
        """The message as `apply_chat_template` takes it (OpenAI's shape)."""
        message: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            message["tool_calls"] = [call.as_dict() for call in self.tool_calls]
        if self.tool_call_id is not None:
            message["tool_call_id"] = self.tool_call_id
        if self.name is not None:
            message["name"] = self.name
        return message


@dataclass(frozen=True)
class Example:
    """One training example, in one of four kinds.

    chat: `messages`, rendered with the model's chat template; the loss covers assistant turns.
    completion: raw `prompt` + `completion` text with no template; the loss covers the completion.
    text: raw `text`; the loss covers every token.
    label: a `text` and its `label`; the task prompt template turns it into a chat example.
    preference: `messages` (the prompt, ending with a user turn) and two replies, `chosen` and
    `rejected`, for preference tuning.
    prompt: `messages` ending with a user turn and no reply: a prompt for on-policy tuning.
    """

    source: str
    line: int
    kind: Literal["chat", "completion", "text", "label", "preference", "prompt"]
    messages: tuple[Message, ...] = ()
    prompt: str = ""
    completion: str = ""
    text: str = ""
    label: str = ""
    chosen: str = ""
    rejected: str = ""
    tools: tuple[dict[str, Any], ...] = ()  # chat rows: the functions the assistant may call (OpenAI's `tools`)
    # prompt rows: the row's own fields as read (OpenAI's reinforcement rows carry what a grader reads,
    # `{{ item.reference_answer }}`); kept for prompt rows only, so other datasets do not hold each row twice
    fields: dict[str, Any] | None = field(default=None, compare=False, repr=False)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


@dataclass(frozen=True)
class Problem:
    """Something wrong with one row: where, what, and how to fix it."""

    where: str
    what: str
    fix: str = ""

    def __str__(self) -> str:
        return f"{self.where}: {self.what}; {self.fix}" if self.fix else f"{self.where}: {self.what}"


@dataclass
class RowProblems:
    """Problems found while converting one row (a row may have several)."""

    where: str
    items: list[Problem] = field(default_factory=list)

    def add(self, what: str, fix: str = "") -> None:
        self.items.append(Problem(self.where, what, fix))

    def __bool__(self) -> bool:
        return bool(self.items)
