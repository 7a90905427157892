"""Continued pretraining on unlabelled domain text: the model reads the domain's documents and
learns their vocabulary and style, with the loss on every token.

Documents are held out for validation whole (before anything is cut), tokenized with the
tokenizer's BOS and a final EOS, cut at `data.max_length` when longer, and packed into rows of
`data.max_length` tokens in which position ids restart at each document, so that no document
attends to another. The first token of each piece is not predicted (nothing before it in the row
belongs to its document).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tunesmith.config import RunConfig
from tunesmith.data.batches import collate
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Example, Problem
from tunesmith.data.pipeline import (
    PreparedData,
    RawSource,
    SourceData,
    read_source,
    split_validation,
)
from tunesmith.data.template import TemplateInfo
from tunesmith.data.tokenize import TokenizedExample, tokenize_cached
from tunesmith.errors import ConfigError, DataError
from tunesmith.training.registry import Method, register_method
from tunesmith.training.sft import causal_loss, load_causal


def prepare_corpus(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    if not data.train:
        raise ConfigError("no training data: set data.train (a folder of .txt/.md files, or rows with a 'text' field)")
    train_raw = read_source(resolve_data_path(data.train), data)
    raws = [train_raw]
    train_docs, problems = text_documents(train_raw)
    if data.validation:
        raws.append(read_source(resolve_data_path(data.validation), data))
        validation_docs, more = text_documents(raws[1])
        problems += more
    else:
        train_docs, validation_docs = split_validation(train_docs, data.validation_split, config.train.seed)
    if problems and not data.skip_invalid:
        raise DataError(f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} rows are not plain text; "
                        "continued pretraining reads documents, not conversations. Fix them, or set "
                        "data.skip_invalid=true to leave them out:", problems)
    train_tokens, cached = tokenize_cached(train_docs, tokenizer, info, "all")
    validation_tokens, _ = tokenize_cached(validation_docs, tokenizer, info, "all")
    train_blocks = split_into_blocks(train_tokens, data.max_length)
    validation_blocks = split_into_blocks(validation_tokens, data.max_length)
    if not train_blocks:
        raise DataError(f"{train_raw.path}: no text to train on")
    sources = [SourceData(raw.path, raw.format, raw.rows, train_blocks if n == 0 else validation_blocks,
                          [p for p in problems if p.where.startswith(str(raw.path))], 0, cached)
               for n, raw in enumerate(raws)]
    return PreparedData(train_blocks, validation_blocks, sources, problems, unit="blocks")


def text_documents(raw: RawSource) -> tuple[list[Example], list[Problem]]:
    documents, problems = [], list(raw.problems)
    for example in raw.examples:
        if example.kind == "text":
            documents.append(example)
        else:
            problems.append(Problem(example.where, f"a {example.kind} row, not plain text",
                                    "give rows with a 'text' field or a folder of .txt/.md files (or use train.method=sft)"))
    return documents, problems


def split_into_blocks(documents: list[TokenizedExample], block: int) -> list[TokenizedExample]:
    """Documents longer than `block` tokens cut into pieces of at most `block` tokens."""
    pieces = []
    for document in documents:
        for start in range(0, len(document), block):
            ids = document.input_ids[start:start + block]
            mask = document.loss_mask[start:start + block].copy()
            mask[0] = False  # predicted from nothing in its row
            if len(ids) > 1:
                pieces.append(replace(document, input_ids=ids, loss_mask=mask))
    return pieces


PRETRAIN = register_method(Method(
    name="pretrain",
    description="continued pretraining on unlabelled domain text, loss on every token, documents packed",
    prepare_data=prepare_corpus,
    load_model=load_causal,
    collate=collate,
    make_loss=causal_loss,
    batching="pack",
))
