"""The shapes data takes between a file and token ids: examples, messages, and problems with rows."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

ROLES = ("system", "user", "assistant")


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    train: bool = True  # assistant turns only: False keeps the turn out of the loss (OpenAI's weight: 0)

    def as_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


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
