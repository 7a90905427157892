"""Token classification (named-entity recognition, any tagging task): a tag per token on top of a
pre-trained encoder or causal LM, from entity spans.

Rows are entity spans (data/spans.py reads CoNLL tag columns, JSONL spans and spaCy's rows); the tag
set is BIO over the entity types found in the training data (or task.labels), whatever scheme the
file used. Each word's first sub-token carries its tag and the rest are left out of the loss, as
transformers' token-classification examples do; the tag map is saved in the model's config.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Problem
from tunesmith.data.pipeline import PreparedData, SourceData, split_validation
from tunesmith.data.spans import (
    IGNORE,
    SpanRow,
    align_tags,
    read_entity_rows,
    tag_names,
    untaggable,
)
from tunesmith.data.template import TemplateInfo
from tunesmith.errors import DataError
from tunesmith.models.load import ModelSource, load_with_head
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.heads import (
    HeadBatch,
    head_method,
    load_head_model,
    padded_rows,
    refuse_problems,
    too_long,
    training_path,
)
from tunesmith.training.registry import register_method


@dataclass(frozen=True)
class TaggedExample:
    input_ids: np.ndarray  # int32 [n], the tokenizer's special tokens included
    tag_ids: np.ndarray  # int64 [n], IGNORE where a token is not a word's first sub-token
    source: str
    line: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return int((self.tag_ids != IGNORE).sum())

    def fingerprint(self) -> bytes:
        return self.input_ids.tobytes() + self.tag_ids.tobytes()


def entity_types(rows: list[SpanRow], configured: list[str] | None) -> list[str]:
    """task.labels when given (the entity types, e.g. [PER, LOC]), else every type in the rows, sorted."""
    return list(configured) if configured else sorted({e.label for row in rows for e in row.entities})


def prepare_tagged_data(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    train_path = training_path(config, "a CoNLL file, or JSONL rows with a text and entity spans")
    configured = set(config.task.labels) if config.task.labels else None
    train_rows, problems = read_entity_rows(train_path, configured)
    types = entity_types(train_rows, config.task.labels)
    if not types:
        raise DataError(f"{train_path}: no entities in any row; token classification needs tagged spans")
    tags = tag_names(types)
    train, more = encode_tagged(train_rows, tags, tokenizer, data.max_length, data.truncate)
    problems = problems + more
    sources = [SourceData(train_path, "entities", len(train_rows), train, problems)]
    if data.validation:
        validation_path = resolve_data_path(data.validation)
        validation_rows, found = read_entity_rows(validation_path, set(types))
        validation, more = encode_tagged(validation_rows, tags, tokenizer, data.max_length, data.truncate)
        sources.append(SourceData(validation_path, "entities", len(validation_rows), validation, found + more))
        problems = problems + found + more
    else:
        train, validation = split_validation(train, data.validation_split, config.train.seed)
    refuse_problems(problems, data.skip_invalid)
    bad = {p.where for p in problems}
    train, validation = [e for e in train if e.where not in bad], [e for e in validation if e.where not in bad]
    return PreparedData(train, validation, sources, problems, record={"type": "tags", "tags": tags})


def encode_tagged(rows: list[SpanRow], tags: list[str], tokenizer: Any, max_length: int,
                  truncate: bool) -> tuple[list[TaggedExample], list[Problem]]:
    """Token ids (with the tokenizer's special tokens) and the tag id of each word's first sub-token."""
    if not rows:
        return [], []
    tag_ids = {tag: number for number, tag in enumerate(tags)}
    encoded = tokenizer([row.text for row in rows], add_special_tokens=True, return_offsets_mapping=True)
    examples, problems, misfits = [], [], []
    for row, ids, offsets in zip(rows, encoded["input_ids"], encoded["offset_mapping"]):
        unknown = sorted({e.label for e in row.entities} - {tag[2:] for tag in tags[1:]})
        if unknown:
            problems.append(Problem(row.where, f"entity type {', '.join(unknown)} is not in the training data's types",
                                    "fix the type, or list every type in task.labels"))
            continue
        labels = align_tags(row.text, offsets, row.entities, tag_ids)
        misfits += [(row.where, row.text[e.start:e.end], back) for e, back in untaggable(row.text, offsets, row.entities, labels, tags)]
        if problem := too_long(row.where, len(ids), max_length, truncate):
            problems.append(problem)
            continue
        source, line = row.where.rsplit(":", 1)
        examples.append(TaggedExample(np.asarray(ids[:max_length], dtype=np.int32),
                                      np.asarray(labels[:max_length], dtype=np.int64), source, int(line)))
    if misfits:
        where, surface, back = misfits[0]
        count = "1 entity" if len(misfits) == 1 else f"{len(misfits)} entities"
        warnings.warn(f"{count} cannot be tagged exactly with this tokenizer: a token glues an entity's last (or first) "
                      f"word to the next, and a token carries one tag (first: {where} {surface!r} would come back as "
                      f"{back!r}); even a perfect tagger misses them, and the scores count them as missed", stacklevel=2)
    return examples, problems


def load_tagger_model(source: ModelSource, config: RunConfig, dtype: torch.dtype, data: PreparedData) -> Any:
    from transformers import AutoModelForTokenClassification

    return load_head_model(partial(load_with_head, AutoModelForTokenClassification, labels=data.record["tags"]),
                           source, config, dtype, data)


def collate_tagged(examples: list[TaggedExample], plan: list[list[int]], pad_id: int) -> HeadBatch:
    rows = [examples[row[0]] for row in plan]  # one sentence per row: tagging never packs
    input_ids, attention = padded_rows(rows, pad_id)
    labels = torch.full(input_ids.shape, IGNORE, dtype=torch.long)
    for number, example in enumerate(rows):
        labels[number, :len(example)] = torch.from_numpy(example.tag_ids)
    # the loss: a mean over labelled tokens
    return HeadBatch(input_ids, attention, labels, int((labels != IGNORE).sum()), int(attention.sum()))


def tagging_loss(config: RunConfig, data: PreparedData) -> LossFn:
    def loss_sum(model: Any, batch: HeadBatch) -> torch.Tensor:
        logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask).logits
        return F.cross_entropy(logits.float().flatten(0, 1), batch.labels.flatten(), ignore_index=IGNORE, reduction="sum")

    return loss_sum


TOKEN_CLASSIFY = register_method(head_method(
    "token-classify", "a tag per token (named entities) on an encoder or a causal LM, trained on entity spans",
    prepare_data=prepare_tagged_data, load_model=load_tagger_model, collate=collate_tagged,
    make_loss=tagging_loss, peft_task_type="TOKEN_CLS",
))
