"""Inference with a trained extractive question-answering head: the answer span of each question in
its context, read over the same overlapping windows training used.

The best span of a question is the highest start + end logit over every window, with the end at or
after the start, at most `max_answer_tokens` long and inside the context (transformers' SQuAD
post-processing). Where training had unanswerable questions, the answer is empty when the null
score (start and end on the first token) of some window beats the best span, as SQuAD 2.0 readers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from tunesmith.data.qa import QARow, windows
from tunesmith.data.squad import f1
from tunesmith.models.classifier import load_trained_head, position_limit
from tunesmith.models.device import attention_kernel
from tunesmith.models.generate import pad_rows


@dataclass
class Reader:
    model: Any
    tokenizer: Any
    name: str
    max_length: int = 384
    stride: int = 128
    max_answer_tokens: int = 30
    unanswerable: bool = False  # trained on questions without an answer: may answer nothing
    null_threshold: float = 0.0  # no answer when the null score beats the best span's by more than this


@dataclass(frozen=True)
class FoundAnswer:
    text: str  # empty: no answer in the context
    start: int  # character offset in the context; -1 with no answer
    score: float  # probability of the span (start x end) in its window; of no answer, when empty

    def as_dict(self) -> dict[str, Any]:
        return {"answer": self.text, "start": self.start, "score": round(self.score, 6)}


def load_reader(target: str) -> Reader:
    """A run folder's question-answering model, with the windows and answer rules it trained with."""
    from transformers import AutoModelForQuestionAnswering

    model, tokenizer, max_length = load_trained_head(target, AutoModelForQuestionAnswering, "extractive-qa")
    manifest_path = Path(target) / "manifest.json"
    task = json.loads(manifest_path.read_text()).get("task", {}) if manifest_path.is_file() else {}
    limit = position_limit(model)
    return Reader(model, tokenizer, str(target), min(max_length, limit) if limit else max_length,
                  task.get("stride", 128), task.get("max_answer_tokens", 30), task.get("unanswerable", False),
                  task.get("null_threshold", 0.0))


@dataclass(frozen=True)
class Scored:
    """One question's best span over its windows (None: no window had context tokens) and its null score."""

    span: FoundAnswer | None
    span_score: float
    null_score: float
    null_probability: float


def read_answers(reader: Reader, rows: list[QARow], *, batch_size: int = 32) -> list[FoundAnswer]:
    """The answer to each row's question in its context."""
    return [choose(scored, reader) for scored in score_answers(reader, rows, batch_size=batch_size)]


def choose(scored: Scored, reader: Reader) -> FoundAnswer:
    no_answer = scored.span is None or (reader.unanswerable and scored.null_score - scored.span_score > reader.null_threshold)
    return FoundAnswer("", -1, scored.null_probability) if no_answer else scored.span


def tune_null_threshold(scored: list[Scored], golds: list[list[str]]) -> tuple[float, float]:
    """The threshold on (null score - best span score) above which answering nothing gives the best
    mean F1 on these questions, and that F1, as the official SQuAD 2.0 script's best-threshold search
    does; ties keep the threshold nearest zero."""

    span_f1 = [max(f1(g, s.span.text) for g in (gold or [""])) if s.span else 0.0 for s, gold in zip(scored, golds)]
    empty_f1 = [1.0 if not gold else 0.0 for gold in golds]
    margins = [s.null_score - s.span_score for s in scored if s.span is not None]
    if not margins:
        return 0.0, sum(empty_f1) / max(len(scored), 1)
    candidates = {0.0, min(margins) - 1.0, max(margins) + 1.0, *margins}  # each margin: the rows above it abstain
    best: tuple[float, float] | None = None
    for threshold in sorted(candidates, key=abs):  # nearest zero first: ties keep it
        total = sum(e if s.span is None or s.null_score - s.span_score > threshold else a
                    for s, a, e in zip(scored, span_f1, empty_f1))
        if best is None or total > best[0] + 1e-9:
            best = (total, threshold)
    return best[1], best[0] / len(scored)


@torch.no_grad()
def score_answers(reader: Reader, rows: list[QARow], *, batch_size: int = 32) -> list[Scored]:
    """Each row's best span and null score over its windows."""
    cut = windows(rows, reader.tokenizer, max_length=reader.max_length, stride=reader.stride)
    device = next(reader.model.parameters()).device
    best: dict[int, tuple[float, FoundAnswer]] = {}
    null: dict[int, tuple[float, float]] = {}
    order = sorted(range(len(cut)), key=lambda i: len(cut[i].input_ids))
    for first in range(0, len(order), batch_size):
        chunk = [cut[i] for i in order[first:first + batch_size]]
        input_ids, attention = pad_rows([w.input_ids for w in chunk], reader.tokenizer.pad_token_id, left=False)
        extra = {}
        if chunk[0].type_ids is not None:
            extra["token_type_ids"] = pad_rows([w.type_ids for w in chunk], 0, left=False)[0].to(device)
        with attention_kernel(device, input_ids.shape[1]):
            output = reader.model(input_ids=input_ids.to(device), attention_mask=attention.to(device), **extra)
        for number, window in enumerate(chunk):
            width = len(window.input_ids)
            starts, ends = output.start_logits[number, :width].float().cpu(), output.end_logits[number, :width].float().cpu()
            context = rows[window.row].context
            found = best_span(starts, ends, window.offsets, reader.max_answer_tokens, context)
            if found is not None and (window.row not in best or found[0] > best[window.row][0]):
                best[window.row] = found
            null_score = float(starts[0] + ends[0])
            null_probability = float(torch.softmax(starts, 0)[0] * torch.softmax(ends, 0)[0])
            if window.row not in null or null_score < null[window.row][0]:
                null[window.row] = (null_score, null_probability)
    return [Scored(best[index][1] if index in best else None, best[index][0] if index in best else float("-inf"),
                   *null[index]) for index in range(len(rows))]


def best_span(starts: torch.Tensor, ends: torch.Tensor, offsets: list[tuple[int, int] | None], longest: int,
              context: str) -> tuple[float, FoundAnswer] | None:
    """The highest-scoring span of one window whose tokens lie in the context, end >= start, at most
    `longest` tokens; None when the window has no context tokens."""
    inside = torch.tensor([span is not None for span in offsets])
    if not inside.any():
        return None
    width = len(offsets)
    scores = starts[:, None] + ends[None, :]
    position = torch.arange(width)
    allowed = (position[None, :] >= position[:, None]) & (position[None, :] - position[:, None] < longest)
    allowed &= inside[:, None] & inside[None, :]
    scores = scores.masked_fill(~allowed, float("-inf"))
    flat = int(scores.argmax())
    start, end = divmod(flat, width)
    probability = float(torch.softmax(starts, 0)[start] * torch.softmax(ends, 0)[end])
    first, last = offsets[start][0], offsets[end][1]
    return float(scores[start, end]), FoundAnswer(context[first:last], first, probability)
