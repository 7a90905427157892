"""The data chain, start to end: source -> records -> examples -> token ids -> checked -> split.

All of it runs before any model weights are loaded (only the tokenizer is needed), and every
problem in every row is collected and reported in one go.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tunesmith.config import DataConfig, TaskConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Problem
from tunesmith.data.formats import FORMATS, choose_format, convert_records
from tunesmith.data.prompting import Retrieve, conversation, with_retrieved
from tunesmith.data.read import read_records
from tunesmith.data.tasks import LabelTask, build_label_task, check_labels
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import TokenizedExample, tokenize_cached
from tunesmith.errors import ConfigError, DataError


@dataclass
class SourceData:
    """One file (or folder) after checking: the usable examples and what was wrong with the rest."""

    path: Path
    format: str | None
    rows: int
    examples: list[TokenizedExample]
    problems: list[Problem]
    truncated: int = 0
    from_cache: bool = False


@dataclass
class PreparedData:
    train: list[TokenizedExample]
    validation: list[TokenizedExample]
    sources: list[SourceData]
    skipped: list[Problem] = field(default_factory=list)
    task: LabelTask | None = None
    unit: str = "examples"  # what one item is, for messages: examples, pairs, prompts, blocks
    extras: dict[str, Any] = field(default_factory=dict)  # what a method computes from the data (reference log-probs)
    record: dict[str, Any] | None = None  # the task as the manifest records it, when it is not a label task (tags)

    def summary(self) -> dict[str, Any]:
        def tokens(rows: list[TokenizedExample]) -> dict[str, int]:
            return {"examples": len(rows), "tokens": int(sum(len(r) for r in rows)),
                    "loss_tokens": int(sum(r.n_loss_tokens for r in rows))}

        return {
            "files": [{"path": str(s.path), "sha256": file_sha256(s.path), "format": s.format, "rows": s.rows,
                       "invalid_rows": len({p.where for p in s.problems}), "truncated": s.truncated}
                      for s in self.sources],
            "train": tokens(self.train),
            "validation": tokens(self.validation),
            "skipped_rows": len({p.where for p in self.skipped}),
        }


@dataclass
class RawSource:
    """A source after reading and conversion, before tokenization."""

    path: Path
    format: str | None
    rows: int
    examples: list[Example]
    problems: list[Problem]


def read_source(path: Path, data: DataConfig) -> RawSource:
    if data.format not in ("auto", *FORMATS):
        raise ConfigError(f"data.format={data.format!r} is not one of auto, {', '.join(FORMATS)}")
    records = read_records(path)
    row_format = choose_format(records, data.format, data.columns)
    examples, problems = convert_records(records, row_format, data.columns)
    return RawSource(path, row_format, len(records), examples, problems)


def render_source(raw: RawSource, data: DataConfig, task: LabelTask | None, retrieve: Retrieve | None = None) -> RawSource:
    """Label rows through the task template, then the default system prompt (data/prompting.py);
    with `retrieve` (data.rag), the documents retrieved for each row's question in its prompt."""
    examples, problems = check_labels(raw.examples, task)
    learnable = []
    for example in examples:
        if example.kind == "prompt" and "messages" in (example.fields or {}):  # a chat row ending with a user turn
            problems.append(Problem(example.where, "the conversation does not end with an assistant reply, so there "
                                    "is nothing to learn", "add the assistant's reply, or train on the row as a prompt "
                                    "(train.method=grpo or online-dpo)"))
        elif example.kind in ("preference", "prompt"):
            problems.append(Problem(example.where, f"a {example.kind} row has no single reply to learn",
                                    "use train.method=dpo for preference pairs, online-dpo for prompts"))
        else:
            example = conversation(example, data.system_prompt, task)
            learnable.append(with_retrieved(example, retrieve) if retrieve and example.messages else example)
    return RawSource(raw.path, raw.format, raw.rows, learnable, raw.problems + problems)


def tokenize_source(raw: RawSource, data: DataConfig, tokenizer: Any, info: TemplateInfo) -> SourceData:
    tokenized, from_cache = tokenize_cached(raw.examples, tokenizer, info, data.loss_on)
    kept, length_problems, truncated = check_lengths(tokenized, data.max_length, data.truncate)
    problems = sorted(raw.problems + length_problems, key=lambda p: _line_of(p.where))
    return SourceData(raw.path, raw.format, raw.rows, kept, problems, truncated, from_cache)


def load_source(path: Path, data: DataConfig, tokenizer: Any, info: TemplateInfo, task: LabelTask | None = None,
                retrieve: Retrieve | None = None) -> SourceData:
    """Read, convert, render, tokenize and length-check one data source."""
    return tokenize_source(render_source(read_source(path, data), data, task, retrieve), data, tokenizer, info)


def check_lengths(examples: list[TokenizedExample], max_length: int, truncate: bool) -> tuple[list[TokenizedExample], list[Problem], int]:
    kept, problems, truncated = [], [], 0
    for example in examples:
        if len(example) > max_length:
            lost = len(example) - max_length
            lost_loss = int(example.loss_mask[max_length:].sum())
            if not truncate:
                problems.append(Problem(
                    example.where,
                    f"example is {len(example)} tokens, over data.max_length={max_length}: {lost} tokens "
                    f"would be lost ({lost_loss} of them in the loss)",
                    f"raise data.max_length to {len(example)}, set data.truncate=true to cut it, "
                    "or data.skip_invalid=true to leave it out",
                ))
                continue
            example = replace(example, input_ids=example.input_ids[:max_length], loss_mask=example.loss_mask[:max_length])
            truncated += 1
        if example.n_loss_tokens == 0:
            problems.append(Problem(example.where, "no token of this example is in the loss (after truncation, if any)",
                                    "shorten the prompt, raise data.max_length, or remove the row"))
            continue
        kept.append(example)
    return kept, problems, truncated


def prepare_data(data: DataConfig, tokenizer: Any, info: TemplateInfo, seed: int, task_config: TaskConfig | None = None,
                 retrieve: Retrieve | None = None) -> PreparedData:
    """Training and validation examples, or a DataError listing every bad row of every file.
    `retrieve`: the retriever of data.rag (built by the training method: retrieval needs models)."""
    if not data.train:
        raise ConfigError("no training data: set data.train (or pass --data FILE)")
    raw_train = read_source(resolve_data_path(data.train), data)
    task = build_label_task(raw_train.examples, task_config or TaskConfig())
    train_source = tokenize_source(render_source(raw_train, data, task, retrieve), data, tokenizer, info)
    sources = [train_source]
    if data.validation:
        sources.append(load_source(resolve_data_path(data.validation), data, tokenizer, info, task, retrieve))
    problems = [p for s in sources for p in s.problems]
    if problems and not data.skip_invalid:
        bad_rows = len({p.where for p in problems})
        total = sum(s.rows for s in sources)
        raise DataError(
            f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} problem{'s' * (len(problems) > 1)} in "
            f"{bad_rows} of {total} rows. Fix them, or set data.skip_invalid=true "
            "to leave those rows out:",
            problems,
        )
    train = train_source.examples
    if data.validation:
        validation = sources[1].examples
    else:
        train, validation = split_validation(train, data.validation_split, seed)
    if not train:
        raise DataError(f"{train_source.path}: no usable training rows remain; fix the rows listed above or add data")
    return PreparedData(train, validation, sources, problems, task)


def split_validation(examples: list[TokenizedExample], fraction: float, seed: int) -> tuple[list[TokenizedExample], list[TokenizedExample]]:
    if fraction <= 0 or len(examples) < 2:
        return examples, []
    count = min(len(examples) - 1, max(1, round(fraction * len(examples))))
    order = np.random.default_rng([seed, 7919]).permutation(len(examples))
    held_out = set(order[:count].tolist())
    train = [e for i, e in enumerate(examples) if i not in held_out]
    validation = [e for i, e in enumerate(examples) if i in held_out]
    return train, validation


def split_validation_by_group(items: list[Any], groups: list[Hashable], fraction: float,
                              seed: int) -> tuple[list[Any], list[Any]]:
    """As split_validation, whole groups at a time (the questions on one context): no group has rows
    on both sides. About `fraction` of the rows are held out, at least one group on each side (with
    fewer than two groups, nothing is held out)."""
    distinct = list(dict.fromkeys(groups))
    if fraction <= 0 or len(distinct) < 2:
        return items, []
    sizes = Counter(groups)
    target = min(len(items) - 1, max(1, round(fraction * len(items))))
    held_out: list[Hashable] = []
    for index in np.random.default_rng([seed, 7919]).permutation(len(distinct)).tolist():
        if sum(sizes[g] for g in held_out) >= target:
            break
        held_out.append(distinct[index])
    if len(held_out) == len(distinct):  # every group reached the target: the last one trains
        held_out.pop()
    chosen = set(held_out)
    train = [item for item, group in zip(items, groups, strict=True) if group not in chosen]
    validation = [item for item, group in zip(items, groups, strict=True) if group in chosen]
    return train, validation


def row_id(where: str) -> str:
    """A row's stable id, file:line (or file:id for SQuAD JSON), from the `where` of anything made
    from it: a row cut into windows (file:line#2) is one row."""
    source, _, line = where.rpartition(":")
    return f"{source}:{line.split('#', 1)[0]}"


def row_ids(items: Iterable[Any]) -> list[str]:
    """The ids of the rows behind `items` (anything with a `where`), once each, in order."""
    return list(dict.fromkeys(row_id(item.where) for item in items))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        with open(file, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def _line_of(where: str) -> tuple[str, int]:
    source, _, line = where.rpartition(":")
    return (source, int(line)) if line.isdigit() else (where, 0)
