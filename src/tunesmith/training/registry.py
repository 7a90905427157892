"""The training methods' registry: what a method changes in a run, and one call to add one.

A method module (sft.py, classify.py, ...) builds its `Method` and calls `register_method` next to
it; session.py looks methods up by name. Kept apart from session.py so that a method module
imports only this small file, never the session that runs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from tunesmith.config import RunConfig
from tunesmith.data.pipeline import PreparedData
from tunesmith.data.template import TemplateInfo
from tunesmith.models.load import ModelSource
from tunesmith.models.loss_eval import LossFn
from tunesmith.training.loop import Validation, WindowSource


@dataclass(frozen=True)
class Method:
    """What a training method changes in a run."""

    name: str
    description: str
    prepare_data: Callable[[RunConfig, Any, TemplateInfo | None], PreparedData]
    load_model: Callable[[ModelSource, RunConfig, torch.dtype, PreparedData], Any]
    collate: Callable[[list, list, int], Any]  # (examples, plan, pad id) -> batch
    make_loss: Callable[[RunConfig, PreparedData], LossFn]
    peft_task_type: str = "CAUSAL_LM"
    uses_chat_template: bool = True  # generative methods; a classifier has no template
    batching: str | None = None  # a batching strategy the method needs, else train.batching
    # (model, data, config, run folder, device, precision, pad id): work between loading and training
    before_fit: Callable[..., None] | None = None
    # (model, data, config, run folder, device, precision, tokenizer, info) -> (window source, validation):
    # for methods that make their batches as they train, in place of a BatchStream over data.train
    window_source: Callable[..., tuple[WindowSource, Validation]] | None = None
    # (model, data, tokenizer, config): work on the final weights before they are saved, e.g.
    # extractive-qa's no-answer threshold, tuned on the validation questions into data.record
    after_fit: Callable[..., None] | None = None


METHODS: dict[str, Method] = {}


def register_method(method: Method) -> Method:
    METHODS[method.name] = method
    return method


