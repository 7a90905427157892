"""The audit's view of a row: its file:line, what the model is asked, what it learns to answer.

System turns are kept apart: a system prompt is usually the same in every row (or one of a few),
so comparing it would make every pair of rows look alike; rows are compared by their other turns,
and the system turns are searched for personal data with the rest."""

from __future__ import annotations

from dataclasses import dataclass

from tunesmith.data.examples import Example


@dataclass(frozen=True)
class AuditRow:
    where: str
    input: str  # what the model is asked (the user turns, the prompt, or the text to label)
    answer: str  # what it learns to reply (the last assistant turn, completion, or chosen reply); "" for text rows
    label: str | None = None
    rejected: str | None = None  # preference rows
    system: str = ""  # the system turns, left out of `input` and `text`

    @property
    def text(self) -> str:
        """What the row holds but its system turns: what duplicates are compared by."""
        return "\n".join(part for part in (self.input, self.answer, self.rejected or "") if part)

    @property
    def everything(self) -> str:
        """Every turn, system turns included: what personal data and encoding damage are searched in."""
        return f"{self.system}\n{self.text}" if self.system else self.text


def audit_row(example: Example) -> AuditRow:
    if example.kind == "label":
        return AuditRow(example.where, example.text, example.label, label=example.label)
    if example.kind == "text":
        return AuditRow(example.where, example.text, "")
    if example.kind == "completion":
        return AuditRow(example.where, example.prompt, example.completion)
    system = "\n".join(m.content for m in example.messages if m.role == "system")
    turns = [m for m in example.messages if m.role != "system"]
    if example.kind == "preference":
        asked = "\n".join(m.content for m in turns if m.role == "user")
        return AuditRow(example.where, asked, example.chosen, rejected=example.rejected, system=system)
    replies = [i for i, m in enumerate(turns) if m.role == "assistant"]
    # the question is the conversation up to the last reply
    asked = "\n".join(m.content for m in (turns[:replies[-1]] if replies else turns))
    return AuditRow(example.where, asked, turns[replies[-1]].content if replies else "", system=system)
