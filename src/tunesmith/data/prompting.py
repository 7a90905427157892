"""What a model is asked for a row, built one way for training, evaluation, the baselines and prediction.

Training learns from a row's conversation (`conversation`): a label row through the task's
template, then the run's system prompt first. Everything that asks a model for an answer
(`prompt_of`: evaluation, the zero- and few-shot baselines, `tunesmith predict`) asks that same
conversation without its last reply, so a model is never scored or used on a prompt it was not
trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from tunesmith.data.examples import Example, Message, Problem
from tunesmith.data.formats import with_system_prompt
from tunesmith.data.tasks import LabelTask


@dataclass(frozen=True)
class PromptedRow:
    where: str
    messages: tuple[Message, ...]  # what the model sees: ends with the user turn to answer
    reference: str | None  # the reply training learns from the row (the label's name); None: the row has none
    label: str | None  # label rows: the gold label's name
    key: str  # the task input (the text to label, or the last user message): for leakage checks and similarity


def conversation(example: Example, system_prompt: str | None, task: LabelTask | None) -> Example:
    """The row as training learns from it: a label row through the task's template, then
    `system_prompt` first unless the row has its own. Rows without messages pass through."""
    if task is not None and example.kind == "label":
        example = task.to_chat(example)
    return with_system_prompt(example, system_prompt)


DOCUMENTS_HEADING = "Here are documents that may help:"

Retrieve = Callable[[str], list[str]]  # a question -> the texts of its best chunks, best first


def with_documents(messages: tuple[Message, ...], documents: list[str], turn: int | None = None) -> tuple[Message, ...]:
    """`messages` with the documents, numbered in rank order, before the text of user turn `turn`
    (default: the last one): how the RAG systems ask, and how retrieval-aware training learns.
    A system message stays first."""
    if not documents:
        return messages
    turn = turn if turn is not None else max(i for i, m in enumerate(messages) if m.role == "user")
    asked = messages[turn]
    listed = "\n".join(f"[{n}] {text}" for n, text in enumerate(documents, start=1))
    augmented = Message(asked.role, f"{DOCUMENTS_HEADING}\n{listed}\n\n{asked.content}", asked.train)
    return messages[:turn] + (augmented,) + messages[turn + 1:]


def with_retrieved(example: Example, retrieve: Retrieve) -> Example:
    """A training conversation with the documents retrieved for the question its last reply answers."""
    replies = [i for i, m in enumerate(example.messages) if m.role == "assistant"]
    asked = [i for i, m in enumerate(example.messages) if m.role == "user" and (not replies or i < replies[-1])]
    if not asked:
        return example
    question = asked[-1]
    return replace(example, messages=with_documents(example.messages, retrieve(example.messages[question].content),
                                                    question))


def prompt_of(example: Example, system_prompt: str | None, task: LabelTask | None) -> PromptedRow | Problem:
    """The prompt a model answers for a row, and the answer training would teach (if the row has one).

    Chat and instruction rows are asked up to their last reply; label rows as the task asks them; a
    text without a label (rows to predict) is asked as a label row when there is a task, else as the
    user's message; prompt and preference rows are asked their prompt.
    """
    if example.kind == "completion":
        return Problem(example.where, "prompt/completion rows are trained as raw text without the chat template, "
                       "but a model is always asked through the template, so its answers would not show what it learned",
                       "write the rows as chat or instruction rows (or give only a 'prompt' column)")
    if example.kind == "text" or (example.kind == "label" and task is None):
        asked = (Message("user", task.prompt(example.text) if task is not None else example.text),)
        example = Example(example.source, example.line, "prompt", messages=asked, text=example.text)
    rendered = conversation(example, system_prompt, task)
    messages, reference = rendered.messages, rendered.chosen or None
    if rendered.kind == "chat":
        messages, reference = messages[:-1], messages[-1].content  # a chat row always ends with its reply
    return PromptedRow(rendered.where, messages, reference, rendered.label or None, rendered.text or messages[-1].content)


def prompt_rows(examples: list[Example], system_prompt: str | None,
                task: LabelTask | None) -> tuple[list[PromptedRow], list[Problem]]:
    """`prompt_of` every example; the rows that cannot be asked are problems of their own."""
    rows, problems = [], []
    for example in examples:
        prompted = prompt_of(example, system_prompt, task)
        (problems if isinstance(prompted, Problem) else rows).append(prompted)
    return rows, problems
