"""The audit's view of a row: its file:line, what the model is asked, what it learns to answer."""

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

    @property
    def text(self) -> str:
        """Everything the row holds, for duplicate and personal-data checks."""
        return "\n".join(part for part in (self.input, self.answer, self.rejected or "") if part)


def audit_row(example: Example) -> AuditRow:
    if example.kind == "label":
        return AuditRow(example.where, example.text, example.label, label=example.label)
    if example.kind == "text":
        return AuditRow(example.where, example.text, "")
    if example.kind == "completion":
        return AuditRow(example.where, example.prompt, example.completion)
    asked = "\n".join(m.content for m in example.messages if m.role in ("user", "system"))
    if example.kind == "preference":
        return AuditRow(example.where, asked, example.chosen, rejected=example.rejected)
    replies = [m.content for m in example.messages if m.role == "assistant"]
    if replies:  # the question is the conversation up to the last reply
        last = max(i for i, m in enumerate(example.messages) if m.role == "assistant")
        asked = "\n".join(m.content for m in example.messages[:last])
    return AuditRow(example.where, asked, replies[-1] if replies else "")
