"""Extractive question answering: a start and an end position of the answer in a context, read by
transformers' question-answering head (start/end logits) on a pre-trained encoder.

Rows are SQuAD-style (data/qa.py): the question and its context are cut into overlapping windows
of data.max_length tokens (data.stride shared); a window that does not hold the whole answer, and
every window of an unanswerable question, points at its first token, as transformers' SQuAD
examples label them. The loss is the mean of the start and end cross-entropies, as the head's own.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from tunesmith.config import RunConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.pipeline import PreparedData, SourceData, split_validation_by_group
from tunesmith.data.qa import QARow, context_groups, read_qa, windows
from tunesmith.data.squad import squad_scores
from tunesmith.data.template import TemplateInfo
from tunesmith.errors import DataError
from tunesmith.models.device import autocast, resolve_precision
from tunesmith.models.generate import pad_rows
from tunesmith.models.load import ModelSource, load_with_head
from tunesmith.models.loss_eval import LossFn
from tunesmith.models.reader import Reader, choose, score_answers, tune_null_threshold
from tunesmith.training.heads import head_method, load_head_model, padded_rows, training_path
from tunesmith.training.registry import register_method


@dataclass(frozen=True)
class SpanExample:
    input_ids: np.ndarray  # int32 [n]: the question, then a window of its context
    type_ids: np.ndarray | None  # int32 [n] segment ids, for models that read them
    start: int  # answer's first and last token; 0 and 0 when the window holds no answer
    end: int
    source: str
    line: str  # the row's line (JSONL) or id (SQuAD JSON), then the window number

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    @property
    def n_loss_tokens(self) -> int:
        return 1  # one answer per window: the loss is averaged over windows

    def fingerprint(self) -> bytes:
        return self.input_ids.tobytes() + np.array([self.start, self.end], dtype=np.int64).tobytes()


@dataclass
class SpanBatch:
    input_ids: torch.Tensor  # [B, L], right-padded
    attention_mask: torch.Tensor
    token_type_ids: torch.Tensor | None
    starts: torch.Tensor  # [B]
    ends: torch.Tensor
    n_loss_tokens: int
    n_tokens: int

    def to(self, device: torch.device | str) -> SpanBatch:
        types = self.token_type_ids.to(device) if self.token_type_ids is not None else None
        return SpanBatch(self.input_ids.to(device), self.attention_mask.to(device), types, self.starts.to(device),
                         self.ends.to(device), self.n_loss_tokens, self.n_tokens)


def prepare_qa_data(config: RunConfig, tokenizer: Any, info: TemplateInfo | None) -> PreparedData:
    data = config.data
    train_path = training_path(config, "SQuAD-style rows: a context, a question and answers")
    train_rows = read_qa(train_path)
    if data.validation:
        validation_path = resolve_data_path(data.validation)
        validation_rows = read_qa(validation_path)
    else:
        train_rows, validation_rows = split_by_context(train_rows, data.validation_split, config.train.seed, train_path)
    train = encode_windows(train_rows, tokenizer, data.max_length, data.stride)
    validation = encode_windows(validation_rows, tokenizer, data.max_length, data.stride)
    if not train:
        raise DataError(f"{train_path}: no questions to train on")
    sources = [SourceData(train_path, "squad", len(train_rows) + (0 if data.validation else len(validation_rows)), train, [])]
    if data.validation:
        sources.append(SourceData(validation_path, "squad", len(validation_rows), validation, []))
    unanswerable = any(not row.answers for row in train_rows)
    return PreparedData(train, validation, sources, unit="windows", extras={"validation_rows": validation_rows},
                        record={"type": "spans", "unanswerable": unanswerable, "stride": data.stride,
                                "max_answer_tokens": config.task.max_answer_tokens})


def split_by_context(rows: list[QARow], fraction: float, seed: int, path: Path) -> tuple[list[QARow], list[QARow]]:
    """Held out by context, and by document where rows name one (`source`, `title`): SQuAD asks about
    five questions on each context, and a validation question whose context was trained on with
    another question measures memory, not reading. Documents are dropped from the grouping when
    they would leave fewer than two groups (all rows from one article)."""
    if fraction <= 0 or len(rows) < 2:
        return rows, []
    groups = context_groups(rows)
    if len(set(groups)) < 2:
        groups = context_groups(rows, documents=False)
    if len(set(groups)) < 2:
        raise DataError(f"{path}: all {len(rows)} questions share one context, so no validation split can keep its "
                        "context out of training; give validation questions on other contexts with data.validation, "
                        "or set data.validation_split=0")
    return split_validation_by_group(rows, groups, fraction, seed)


def encode_windows(rows: list[QARow], tokenizer: Any, max_length: int, stride: int) -> list[SpanExample]:
    if not rows:
        return []
    try:
        cut = windows(rows, tokenizer, max_length=max_length, stride=stride)
    except Exception as exc:  # the tokenizer refuses a stride that leaves no room after a long question
        raise DataError(f"the questions and contexts could not be cut into windows of data.max_length={max_length} "
                        f"with data.stride={stride} ({str(exc).splitlines()[0]}); lower data.stride or raise "
                        "data.max_length") from exc
    examples, seen = [], {}
    for window in cut:
        row = rows[window.row]
        number = seen[window.row] = seen.get(window.row, 0) + 1
        source, _, line = row.where.rpartition(":")
        types = np.asarray(window.type_ids, dtype=np.int32) if window.type_ids is not None else None
        examples.append(SpanExample(np.asarray(window.input_ids, dtype=np.int32), types, window.start, window.end,
                                    source, f"{line}#{number}"))
    return examples


def load_reader_model(source: ModelSource, config: RunConfig, dtype: torch.dtype, data: PreparedData) -> Any:
    from transformers import AutoModelForQuestionAnswering

    return load_head_model(partial(load_with_head, AutoModelForQuestionAnswering, labels=None), source, config, dtype, data)


def collate_spans(examples: list[SpanExample], plan: list[list[int]], pad_id: int) -> SpanBatch:
    rows = [examples[row[0]] for row in plan]  # one window per row: windows never pack
    input_ids, attention = padded_rows(rows, pad_id)
    types = None
    if rows[0].type_ids is not None:
        types = pad_rows([example.type_ids.astype(np.int64) for example in rows], 0, left=False)[0]
    starts = torch.tensor([e.start for e in rows], dtype=torch.long)
    ends = torch.tensor([e.end for e in rows], dtype=torch.long)
    return SpanBatch(input_ids, attention, types, starts, ends, len(rows), int(attention.sum()))


def span_logits(model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                token_type_ids: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, L] start and end logits; padding columns at -inf so that no answer is ever read there."""
    extra = {"token_type_ids": token_type_ids} if token_type_ids is not None else {}
    output = model(input_ids=input_ids, attention_mask=attention_mask, **extra)
    padding = attention_mask == 0
    return (output.start_logits.float().masked_fill(padding, float("-inf")),
            output.end_logits.float().masked_fill(padding, float("-inf")))


def span_loss(config: RunConfig, data: PreparedData) -> LossFn:
    def loss_sum(model: Any, batch: SpanBatch) -> torch.Tensor:
        starts, ends = span_logits(model, batch.input_ids, batch.attention_mask, batch.token_type_ids)
        return (F.cross_entropy(starts, batch.starts, reduction="sum") + F.cross_entropy(ends, batch.ends, reduction="sum")) / 2

    return loss_sum


@torch.no_grad()
def tune_no_answer(model: Any, data: PreparedData, tokenizer: Any, config: RunConfig) -> None:
    """When training had unanswerable questions: the margin by which the null score must beat the
    best span before the reader answers nothing, chosen for the best F1 on one half of the validation
    questions (as SQuAD 2.0 systems tune it on their dev set), and the F1 the reader gets with it on
    the other half, as `validation_f1`: an F1 read on the rows it was tuned on flatters it. Both are
    saved with the run's task (manifest.json), the tuned-on F1 as null_threshold_tuning_f1."""
    rows = data.extras.get("validation_rows") or []
    if not data.record["unanswerable"] or not rows:
        return
    was_training = model.training
    model.eval()
    reader = Reader(model, tokenizer, "validation", config.data.max_length, config.data.stride,
                    config.task.max_answer_tokens, unanswerable=True)
    device = next(model.parameters()).device
    tuning, scoring = threshold_halves(rows, config.train.seed)
    # As validation ran: a bf16 base under LoRA feeds the fp32 head only inside autocast.
    with autocast(device, resolve_precision(config.train.precision, device)):
        scored = score_answers(reader, tuning + scoring, batch_size=config.train.batch_size)
    model.train(was_training)
    threshold, tuned_f1 = tune_null_threshold(scored[:len(tuning)], [_golds(row) for row in tuning])
    reader.null_threshold = round(threshold, 6)  # as saved, and as load_reader will answer with it
    data.record.update({"null_threshold": reader.null_threshold, "null_threshold_rows": len(tuning),
                        "null_threshold_tuning_f1": round(tuned_f1, 6), "validation_f1_rows": len(scoring)})
    if scoring:
        answers = [choose(found, reader).text for found in scored[len(tuning):]]
        data.record["validation_f1"] = round(squad_scores([_golds(row) for row in scoring], answers)["f1"], 6)


def threshold_halves(rows: list[QARow], seed: int) -> tuple[list[QARow], list[QARow]]:
    """The validation questions the no-answer threshold is tuned on, and those its F1 is read on:
    halves by context where there are two contexts or more, else by question (one question: no
    second half, and no validation_f1)."""
    groups = context_groups(rows)
    if len(set(groups)) < 2:
        groups = list(range(len(rows)))
    return split_validation_by_group(rows, groups, 0.5, seed)


def _golds(row: QARow) -> list[str]:
    return [answer.text for answer in row.answers]


EXTRACTIVE_QA = register_method(head_method(
    "extractive-qa", "answer spans in a context (SQuAD-style rows) with a start/end head on an encoder",
    prepare_data=prepare_qa_data, load_model=load_reader_model, collate=collate_spans,
    make_loss=span_loss, peft_task_type="QUESTION_ANS", after_fit=tune_no_answer,
))
