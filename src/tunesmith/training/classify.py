"""Classification with a trained head: a label layer on top of a pre-trained model.

Works on causal LMs (the head reads the last token of each row, found by the attention mask) and
on encoders such as BERT (the head reads the pooled first token). The label map comes from the
training data and is saved in the model's config (id2label / label2id) and in task.json. With LoRA
the body gets adapters and the head is trained in full (peft's modules_to_save).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.examples import Problem
from tunesmith.data.pipeline import (
    PreparedData,
    RawSource,
    SourceData,
    read_source,
    split_validation,
)
from tunesmith.data.tasks import LabelTask, build_label_task
from tunesmith.data.template import TemplateInfo
from tunesmith.errors import DataError
from tunesmith.models.classifier import classifier_logits
from tunesmith.models.load import ModelSource, load_sequence_classifier
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
class LabelledExample:
    input_ids: np.ndarray  # int32 [n], the tokenizer's special tokens included
    label_id: int
    source: str
    line: int

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return 1

    def fingerprint(self) -> bytes:
        return self.input_ids.tobytes() + self.label_id.to_bytes(4, "little")


def prepare_labelled_data(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    train_raw = read_source(training_path(config, "rows with a text and a label"), data)
    task = build_label_task(train_raw.examples, config.task)
    if task is None:
        raise DataError(f"{train_raw.path}: no labelled rows; classification needs a text and a label per row "
                        "(map your columns with --text-column and --label-column)")
    train, problems = encode_labelled(train_raw, task, tokenizer, data.max_length, data.truncate)
    sources = [SourceData(train_raw.path, train_raw.format, train_raw.rows, train, problems)]
    if data.validation:
        validation_raw = read_source(resolve_data_path(data.validation), data)
        validation, more = encode_labelled(validation_raw, task, tokenizer, data.max_length, data.truncate)
        sources.append(SourceData(validation_raw.path, validation_raw.format, validation_raw.rows, validation, more))
        problems = problems + more
    else:
        train, validation = split_validation(train, data.validation_split, config.train.seed)
    refuse_problems(problems, data.skip_invalid)
    return PreparedData(train, validation, sources, problems, task)


def encode_labelled(raw: RawSource, task: LabelTask, tokenizer: Any, max_length: int,
                    truncate: bool) -> tuple[list[LabelledExample], list[Problem]]:
    """Token ids (with the tokenizer's own special tokens) and label ids; every bad row reported."""
    problems = list(raw.problems)
    usable = []
    for example in raw.examples:
        if example.kind != "label":
            problems.append(Problem(example.where, f"a {example.kind} row has no label",
                                    "give each row a text and a label (--text-column / --label-column)"))
        elif task.name_of(example.label) not in task.labels:
            problems.append(Problem(example.where, f"label {task.name_of(example.label)!r} is not one of the task's "
                                    f"labels ({', '.join(task.labels)})", "fix the label, or list it in task.labels"))
        else:
            usable.append(example)
    encoded = tokenizer([e.text for e in usable], add_special_tokens=True)["input_ids"] if usable else []
    examples = []
    for example, ids in zip(usable, encoded):
        if problem := too_long(example.where, len(ids), max_length, truncate):
            problems.append(problem)
            continue
        label_id = task.labels.index(task.name_of(example.label))
        examples.append(LabelledExample(np.asarray(ids[:max_length], dtype=np.int32), label_id, example.source, example.line))
    return examples, sorted(problems, key=lambda p: p.where)


def load_classifier(source: ModelSource, config: RunConfig, dtype: torch.dtype, data: PreparedData) -> Any:
    assert data.task is not None
    # a causal LM's `score` head reads the config's pad id: load_sequence_classifier sets it there alone
    return load_head_model(partial(load_sequence_classifier, labels=list(data.task.labels)), source, config, dtype, data)


def collate_labelled(examples: list[LabelledExample], plan: list[list[int]], pad_id: int) -> HeadBatch:
    rows = [examples[row[0]] for row in plan]  # one example per row: classification never packs
    input_ids, attention = padded_rows(rows, pad_id)
    labels = torch.tensor([e.label_id for e in rows], dtype=torch.long)
    return HeadBatch(input_ids, attention, labels, len(rows), int(attention.sum()))  # the loss: a mean over examples


def class_weights(examples: list[LabelledExample], count: int) -> torch.Tensor:
    """'balanced' weights, n / (classes x n_class), as scikit-learn computes them."""
    counts = np.bincount([e.label_id for e in examples], minlength=count).astype(np.float64)
    weights = len(examples) / (count * np.maximum(counts, 1))
    return torch.tensor(weights, dtype=torch.float32)


def classification_loss(config: RunConfig, data: PreparedData) -> LossFn:
    weights = class_weights(data.train, len(data.task.labels)) if config.task.class_weights == "balanced" else None

    def loss_sum(model: Any, batch: HeadBatch) -> torch.Tensor:
        logits = classifier_logits(model, batch.input_ids, batch.attention_mask)
        weight = weights.to(logits.device) if weights is not None else None
        return F.cross_entropy(logits.float(), batch.labels, weight=weight, reduction="sum")

    return loss_sum


CLASSIFY = register_method(head_method(
    "classify", "a classification head on a causal LM or an encoder, trained on labelled rows",
    prepare_data=prepare_labelled_data, load_model=load_classifier, collate=collate_labelled,
    make_loss=classification_loss, peft_task_type="SEQ_CLS",
))
