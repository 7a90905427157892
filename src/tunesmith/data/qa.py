"""Extractive question answering data: SQuAD-style rows (a context, a question, answers as text and
character start; SQuAD 2.0's unanswerable questions allowed), checked, and cut into overlapping
windows of tokens whose answer positions come from the tokenizer's character offsets.

The windows are the tokenizer's own (`truncation="only_second"`, `return_overflowing_tokens`,
`stride`), as transformers' question-answering examples build them, so a context longer than the
model reads is covered by windows that overlap by `stride` tokens and an answer cut by one window's
edge lies whole inside the next.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.examples import Problem
from tunesmith.errors import DataError


@dataclass(frozen=True)
class Answer:
    text: str
    start: int  # character offset into the context


@dataclass(frozen=True)
class QARow:
    where: str
    id: str
    question: str
    context: str
    answers: tuple[Answer, ...]  # empty: the question has no answer in the context (SQuAD 2.0)
    source: str | None = None  # the document the context comes from (its `source` field): for retrieval recall
    title: str | None = None  # the article the context is a paragraph of (SQuAD's title), when given


@dataclass(frozen=True)
class Window:
    row: int  # index of its QARow
    input_ids: list[int]
    offsets: list[tuple[int, int] | None]  # character span in the context of each token; None outside it
    start: int  # token position of the first answer's first token, 0 (the first token) when not inside
    end: int
    type_ids: list[int] | None = None  # segment ids (question 0, context 1) for models that read them (BERT)


def _answers(raw: Any) -> list[tuple[Any, Any]] | None:
    """Answers as SQuAD's JSON writes them ([{text, answer_start}]) or as Hugging Face datasets do
    ({text: [...], answer_start: [...]})."""
    if isinstance(raw, dict) and isinstance(raw.get("text"), list) and isinstance(raw.get("answer_start"), list):
        return list(zip(raw["text"], raw["answer_start"]))
    if isinstance(raw, list) and all(isinstance(a, dict) for a in raw):
        return [(a.get("text"), a.get("answer_start")) for a in raw]
    return None


def _row(where: str, data: dict, problems: list[Problem]) -> QARow | None:
    context, question = data.get("context"), data.get("question")
    pairs = _answers(data.get("answers", []))
    if not isinstance(context, str) or not isinstance(question, str) or pairs is None:
        problems.append(Problem(where, "a row needs a context, a question and answers",
                                'write {"context": ..., "question": ..., "answers": {"text": [...], "answer_start": [...]}}'))
        return None
    answers = []
    for text, start in pairs:
        if not isinstance(text, str) or not isinstance(start, int) or context[start:start + len(text)] != text:
            found = context.find(text) if isinstance(text, str) and text else -1
            hint = f"it occurs at {found}" if found >= 0 else "it does not occur in the context"
            problems.append(Problem(where, f"answer {text!r} is not at answer_start {start} ({hint})",
                                    "fix answer_start" if found >= 0 else "fix the answer or the context"))
            continue
        answers.append(Answer(text, start))
    if data.get("is_impossible") is False and not answers:
        problems.append(Problem(where, "an answerable question has no answer", "add one or set is_impossible"))
    source, title = data.get("source"), data.get("title")
    return QARow(where, str(data.get("id", where)), question, context, tuple(answers),
                 source if isinstance(source, str) else None, title if isinstance(title, str) else None)


def read_qa(path: str | Path) -> list[QARow]:
    """Rows of a SQuAD JSON file (data -> paragraphs -> qas) or a JSONL file of flat rows; a
    DataError lists every problem."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a SQuAD-style .json or .jsonl file")
    rows: list[QARow] = []
    problems: list[Problem] = []
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            articles = json.loads(text)["data"]
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise DataError(f"{path}: not a SQuAD file ({exc}); it needs {{\"data\": [{{\"paragraphs\": ...}}]}}") from None
        for article in articles:
            for paragraph in article.get("paragraphs", []):
                for qa in paragraph.get("qas", []):
                    flat = {**qa, "context": paragraph.get("context"), "title": article.get("title")}
                    row = _row(f"{path}:{qa.get('id', '?')}", flat, problems)
                    rows += [row] if row else []
    else:
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                problems.append(Problem(f"{path}:{number}", f"not valid JSON ({exc.msg})", "write one JSON object per line"))
                continue
            row = _row(f"{path}:{number}", data if isinstance(data, dict) else {}, problems)
            rows += [row] if row else []
    if problems:
        raise DataError(f"{path}: {len(problems)} problems in the question-answering data:", problems)
    return rows


def context_groups(rows: list[QARow], *, documents: bool = True) -> list[int]:
    """A group number for each row: rows that share a context are one group, and with `documents`,
    so are rows from one document (the same `source`, or the same `title`). A split by group leaves
    no context, nor paragraphs of one article, on both sides."""
    parent = list(range(len(rows)))

    def root(index: int) -> int:
        while parent[index] != index:
            parent[index] = parent[parent[index]]
            index = parent[index]
        return index

    first: dict[tuple[str, str], int] = {}
    for index, row in enumerate(rows):
        keys = [("context", row.context)] + ([("source", row.source), ("title", row.title)] if documents else [])
        for key in keys:
            if key[1] is None:
                continue
            if key in first:
                parent[root(index)] = root(first[key])
            else:
                first[key] = index
    return [root(index) for index in range(len(rows))]


def windows(rows: list[QARow], tokenizer: Any, *, max_length: int = 384, stride: int = 128) -> list[Window]:
    """Each row's question with its context in windows of `max_length` tokens overlapping by
    `stride`; each window's answer positions, or the first token when the answer is not whole inside."""
    if not getattr(tokenizer, "is_fast", False):
        raise DataError("extractive QA needs a fast tokenizer (character offsets); this model's tokenizer is not one")
    encoded = tokenizer([r.question for r in rows], [r.context for r in rows], truncation="only_second",
                        max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True)
    result = []
    for index, input_ids in enumerate(encoded["input_ids"]):
        row = encoded["overflow_to_sample_mapping"][index]
        sequence = encoded.sequence_ids(index)
        context = rows[row].context
        offsets = [_visible(context, *span) if part == 1 else None
                   for span, part in zip(encoded["offset_mapping"][index], sequence)]
        start = end = 0
        if rows[row].answers:
            answer = rows[row].answers[0]
            first, last = answer.start, answer.start + len(answer.text)
            inside = [i for i, span in enumerate(offsets) if span is not None]
            if inside and offsets[inside[0]][0] <= first and offsets[inside[-1]][1] >= last:
                start = next(i for i in inside if offsets[i][1] > first)
                end = max(i for i in inside if offsets[i][0] < last)
        type_ids = encoded["token_type_ids"][index] if "token_type_ids" in encoded else None
        result.append(Window(row, list(input_ids), offsets, start, end, list(type_ids) if type_ids is not None else None))
    return result


def _visible(text: str, start: int, end: int) -> tuple[int, int]:
    """A token's span without the leading space byte-level tokenizers keep inside it (" the")."""
    while start < end and text[start].isspace():
        start += 1
    return start, end
