"""Prompt rows: conversations that end with a user turn for a model to answer, with a reference
answer where the row has one. On-policy training samples its pairs from them; evaluation asks the
same prompts of the starting and the tuned model.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Message, Problem
from tunesmith.data.pipeline import PreparedData, SourceData, read_source, split_validation
from tunesmith.data.prompting import prompt_of
from tunesmith.data.tasks import LabelTask, build_label_task
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import encode_prompt
from tunesmith.errors import ConfigError, DataError


@dataclass(frozen=True)
class PromptItem:
    messages: tuple[Message, ...]  # ends with the user turn to answer
    reference: str | None  # a reference answer, for `reference:` rewards
    source: str
    line: int
    length: int  # prompt tokens, for batching
    fields: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)  # the row's own, for graders

    def __len__(self) -> int:
        return self.length

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return 1

    @property
    def question(self) -> str:
        return self.messages[-1].content

    def fingerprint(self) -> bytes:
        return json.dumps([[m.role, m.content] for m in self.messages]).encode()


def prepare_prompts(config: RunConfig, tokenizer: Any, info: TemplateInfo | None, *,
                    reply_tokens: int | None = None) -> PreparedData:
    """Training and validation prompts, or a DataError listing every bad row. With `reply_tokens`,
    a prompt that leaves no room for a reply that long within data.max_length is a bad row."""
    data = config.data
    if not data.train:
        raise ConfigError("no training data: set data.train (prompts: rows with 'prompt', chat, instruction or labelled rows)")
    raws = [read_source(resolve_data_path(data.train), data)]
    task = build_label_task(raws[0].examples, config.task)
    room = None if reply_tokens is None else (data.max_length, reply_tokens)
    items, problems = prompt_items(raws[0].examples, task, tokenizer, info, room, data.system_prompt)
    problems = list(raws[0].problems) + problems
    if data.validation:
        raws.append(read_source(resolve_data_path(data.validation), data))
        validation, more = prompt_items(raws[1].examples, task, tokenizer, info, room, data.system_prompt)
        problems += list(raws[1].problems) + more
    else:
        items, validation = split_validation(items, data.validation_split, config.train.seed)
    if problems and not data.skip_invalid:
        raise DataError(f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} problems. Fix "
                        "them, or set data.skip_invalid=true to leave those rows out:", problems)
    if not items:
        raise DataError(f"{raws[0].path}: no prompts to sample from")
    sources = [SourceData(raw.path, raw.format, raw.rows, items if n == 0 else validation,
                          [p for p in problems if p.where.startswith(str(raw.path))]) for n, raw in enumerate(raws)]
    return PreparedData(items, validation, sources, problems, task, unit="prompts")


def prompt_items(examples: list[Example], task: LabelTask | None, tokenizer: Any, info: TemplateInfo,
                 room: tuple[int, int] | None = None, system_prompt: str | None = None) -> tuple[list[PromptItem], list[Problem]]:
    """Each row's prompt (and reference answer), asked as training and evaluation ask it (data/prompting.py,
    the run's system prompt included); with `room` = (max_length, reply tokens), prompts too long to be
    followed by a reply of that many tokens are problems of their row."""
    items, problems = [], []
    for example in examples:
        if example.kind not in ("prompt", "chat", "preference") and not (example.kind == "label" and task is not None):
            problems.append(Problem(example.where, f"a {example.kind} row is not a prompt",
                                    "give rows with a 'prompt', or chat / instruction / labelled rows"))
            continue
        prompted = prompt_of(example, system_prompt, task)
        if isinstance(prompted, Problem):
            problems.append(prompted)
            continue
        messages, reference = prompted.messages, prompted.reference
        length = len(encode_prompt(tokenizer, info, list(messages)))
        if room is not None and length + room[1] > room[0]:
            max_length, reply_tokens = room
            problems.append(Problem(example.where, f"the prompt is {length} tokens: with a reply of up to "
                                    f"preference.max_new_tokens={reply_tokens} a pair reaches {length + reply_tokens} "
                                    f"tokens, over data.max_length={max_length}",
                                    f"shorten the prompt, raise data.max_length to {length + reply_tokens}, lower "
                                    "preference.max_new_tokens, or set data.skip_invalid=true to leave it out"))
            continue
        items.append(PromptItem(tuple(messages), reference, example.source, example.line, length, example.fields or {}))
    return items, problems
