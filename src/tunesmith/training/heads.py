"""What the task-head methods share: classify, token-classify and extractive-qa each put one of
transformers' heads (new and untrained) on a pre-trained body. Each method's file keeps what differs:
how its rows become examples, its batch, its loss.

All three read one example per row (never packed), in batches grouped by length and padded on the
right with the tokenizer's pad id, without a chat template. The head's label map is written into the
model's config when it is loaded (models/load.py); with LoRA peft trains the head in full and it is
cast to fp32 like every trained weight (models/adapters.py); the run saves it as any model.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Problem
from tunesmith.data.pipeline import PreparedData
from tunesmith.errors import ConfigError, DataError
from tunesmith.models.classifier import position_limit
from tunesmith.models.generate import pad_rows
from tunesmith.models.load import ModelSource, load_tokenizer
from tunesmith.training.registry import Method


def head_method(name: str, description: str, *, prepare_data: Callable, load_model: Callable, collate: Callable,
                make_loss: Callable, peft_task_type: str, after_fit: Callable[..., None] | None = None) -> Method:
    """A task-head method, for register_method: no chat template, batches grouped by length."""
    return Method(name=name, description=description, prepare_data=prepare_data, load_model=load_model,
                  collate=collate, make_loss=make_loss, peft_task_type=peft_task_type, uses_chat_template=False,
                  batching="group_by_length", after_fit=after_fit)


@dataclass
class HeadBatch:
    """Right-padded rows and their targets: a label per row (classify) or a tag per token (token-classify)."""

    input_ids: torch.Tensor  # [B, L]
    attention_mask: torch.Tensor  # [B, L]
    labels: torch.Tensor  # [B], or [B, L] with IGNORE on padding and on tokens outside the loss
    n_loss_tokens: int  # what the loss is averaged over: examples, or labelled tokens
    n_tokens: int

    def to(self, device: torch.device | str) -> HeadBatch:
        return HeadBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device),
                         self.n_loss_tokens, self.n_tokens)


def padded_rows(examples: list[Any], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The examples' token ids as one [rows, longest] batch right-padded with `pad_id`, and its attention mask."""
    return pad_rows([example.input_ids.astype(np.int64) for example in examples], pad_id, left=False)


def training_path(config: RunConfig, rows: str) -> Path:
    """data.train's file; without one, an error saying which `rows` the method trains on."""
    if not config.data.train:
        raise ConfigError(f"no training data: set data.train ({rows})")
    return resolve_data_path(config.data.train)


def too_long(where: str, length: int, max_length: int, truncate: bool) -> Problem | None:
    """The problem with a text of `length` tokens, if it is over data.max_length and may not be cut."""
    if length <= max_length or truncate:
        return None
    return Problem(where, f"text is {length} tokens, over data.max_length={max_length}",
                   f"raise data.max_length to {length} or set data.truncate=true")


def refuse_problems(problems: list[Problem], skip_invalid: bool) -> None:
    """Every bad row at once, unless data.skip_invalid leaves them out."""
    if problems and not skip_invalid:
        raise DataError(f"{problems[0].where.rsplit(':', 1)[0]}: {len(problems)} problems in "
                        f"{len({p.where for p in problems})} rows. Fix them, or set "
                        "data.skip_invalid=true to leave those rows out:", problems)


def load_head_model(load: Callable[..., Any], source: ModelSource, config: RunConfig, dtype: torch.dtype,
                    data: PreparedData) -> Any:
    """The body under a new head, as `load` (a models/load.py loader, its labels given) makes it with
    the pad id batches are padded with (the tokenizer's); its positions checked against the data."""
    model_settings = config.model
    tokenizer = load_tokenizer(source, revision=model_settings.revision, trust_remote_code=model_settings.trust_remote_code)
    model = load(source, pad_token_id=tokenizer.pad_token_id, revision=model_settings.revision,
                 trust_remote_code=model_settings.trust_remote_code,
                 attn_implementation=model_settings.attn_implementation, dtype=dtype)
    check_positions(model, data, config)
    return model


def check_positions(model: Any, data: PreparedData, config: RunConfig) -> None:
    """An example longer than a learned position table (512 rows for BERT) would end in an index
    error deep in the model: say so before training, with the setting that fixes it."""
    limit = position_limit(model)
    longest = max((len(e) for e in data.train + data.validation), default=0)
    if limit is not None and longest > limit:
        raise ConfigError(f"data.max_length={config.data.max_length} is over the {limit} positions {config.model.name} "
                          f"can read (the longest example is {longest} tokens); set data.max_length={limit} "
                          "(and data.truncate=true to cut longer texts)")
