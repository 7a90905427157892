"""Entity spans for token classification (NER): read from CoNLL-style tag columns, JSONL with
character spans, or spaCy's `[text, {"entities": [[start, end, label]]}]`; checked; and aligned to
a tokenizer's sub-word tokens (the first sub-token of each word carries the word's tag, the rest are
left out of the loss, as transformers' token-classification examples do). A byte-level token can hold
the start of a word ("'s" holds the "s" of "Macy's"): it tags that word (word_of_tokens says which).

Spans are the one representation: tag sequences convert to spans on reading and back on alignment,
so BIO, BIOES and IO files train the same model and are scored the same way.
"""

from __future__ import annotations

import bisect
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.data.examples import Problem
from tunesmith.errors import DataError

TAG_FILES = (".conll", ".bio", ".iob", ".iob2", ".bioes", ".txt", ".tsv")  # token-and-tag files; others hold JSON rows
IGNORE = -100  # transformers' ignore index: sub-tokens after a word's first, special tokens, padding
_WORD = re.compile(r"\w+|[^\w\s]")
_LETTER = re.compile(r"\w")  # a word that starts with one is a run of letters and digits


@dataclass(frozen=True)
class Entity:
    start: int  # character offsets into the row's text, end exclusive
    end: int
    label: str


@dataclass(frozen=True)
class SpanRow:
    where: str  # file:line of the row (the sentence's first line for CoNLL)
    text: str
    entities: tuple[Entity, ...]


def detect_scheme(tags: list[str]) -> str:
    """BIOES when an E- or S- tag occurs, BIO when a B- tag does, else IO."""
    prefixes = {tag.split("-", 1)[0] for tag in tags if "-" in tag}
    if prefixes & {"E", "S"}:
        return "BIOES"
    return "BIO" if "B" in prefixes else "IO"


def tags_to_entities(tags: list[str], scheme: str | None = None) -> tuple[list[tuple[int, int, str]], list[str]]:
    """(first, last + 1, type) token ranges of the entities in a tag sequence, and the problems
    found. Like seqeval's default mode (conlleval's rules): an I- that does not continue an entity
    of its type starts one, and is reported as a problem."""
    scheme = scheme or detect_scheme(tags)
    entities, problems = [], []
    start, kind = None, None
    for position, tag in enumerate(tags + ["O"]):
        prefix, _, label = tag.partition("-")
        if tag != "O" and (prefix not in ("B", "I", "E", "S") or not label):
            problems.append(f"tag {tag!r} at token {position + 1} is not O or B-/I-/E-/S- followed by a type")
            prefix, label = "O", ""
        begins = prefix in ("B", "S") or (prefix in ("I", "E") and (kind != label or start is None))
        if prefix in ("I", "E") and (kind != label or start is None) and scheme != "IO":
            problems.append(f"{tag} at token {position + 1} does not continue an entity of type {label}; "
                            f"use B-{label} to start one")
        if start is not None and (prefix == "O" or begins):
            entities.append((start, position, kind))
            start, kind = None, None
        if prefix != "O" and begins:
            start, kind = position, label
        if prefix in ("E", "S") and start is not None:
            entities.append((start, position + 1, kind))
            start, kind = None, None
    return entities, problems


def entities_to_tags(count: int, spans: list[tuple[int, int, str]]) -> list[str]:
    """BIO tags of `count` tokens with entities at the given token ranges."""
    tags = ["O"] * count
    for first, stop, label in spans:
        tags[first] = f"B-{label}"
        for position in range(first + 1, stop):
            tags[position] = f"I-{label}"
    return tags


def read_conll(path: Path, *, tag_column: int = -1) -> tuple[list[SpanRow], list[Problem]]:
    """Sentences of a CoNLL-style file (token first, tag in `tag_column`, blank line between
    sentences, -DOCSTART- lines skipped) as text joined by single spaces with character spans."""
    rows, problems = [], []
    tokens: list[str] = []
    tags: list[str] = []
    first_line = 0
    lines = path.read_text(encoding="utf-8").splitlines() + [""]
    for number, line in enumerate(lines, start=1):
        columns = line.split()
        if columns and columns[0] == "-DOCSTART-":
            continue
        if columns:
            if len(columns) < 2:
                problems.append(Problem(f"{path}:{number}", "a token line needs a token and a tag column",
                                        "separate the token and its tag with a space or a tab"))
                continue
            first_line = first_line or number
            tokens.append(columns[0])
            tags.append(columns[tag_column])
            continue
        if tokens:
            where = f"{path}:{first_line}"
            found, bad = tags_to_entities(tags)
            problems += [Problem(where, what, "fix the tag") for what in bad]
            starts = []
            offset = 0
            for token in tokens:
                starts.append(offset)
                offset += len(token) + 1
            text = " ".join(tokens)
            entities = tuple(Entity(starts[a], starts[b - 1] + len(tokens[b - 1]), label) for a, b, label in found)
            rows.append(SpanRow(where, text, entities))
        tokens, tags, first_line = [], [], 0
    return rows, problems


def read_span_rows(path: Path) -> tuple[list[SpanRow], list[Problem]]:
    """JSONL rows `{"text", "entities": [{"start", "end", "label"}]}` or spaCy's
    `[text, {"entities": [[start, end, label], ...]}]`."""
    rows, problems = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data: Any = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(Problem(where, f"not valid JSON ({exc.msg})", "write one JSON value per line"))
            continue
        if isinstance(data, list) and len(data) == 2 and isinstance(data[1], dict):
            text, raw = data[0], [{"start": s, "end": e, "label": lab} for s, e, lab in data[1].get("entities", [])]
        elif isinstance(data, dict):
            text, raw = data.get("text"), data.get("entities", [])
        else:
            text, raw = None, []
        if not isinstance(text, str) or not isinstance(raw, list):
            problems.append(Problem(where, "a row needs a text and a list of entities",
                                    'write {"text": ..., "entities": [{"start": 0, "end": 5, "label": "PER"}]}'))
            continue
        entities = []
        for entity in raw:
            if not (isinstance(entity, dict) and isinstance(entity.get("start"), int) and isinstance(entity.get("end"), int)
                    and isinstance(entity.get("label"), str) and 0 <= entity["start"] < entity["end"] <= len(text)):
                problems.append(Problem(where, f"entity {entity!r} is not a span inside the text (0 <= start < end <= "
                                        f"{len(text)}, and a label)", "fix its offsets"))
                continue
            entities.append(Entity(entity["start"], entity["end"], entity["label"]))
        rows.append(SpanRow(where, text, tuple(sorted(entities, key=lambda e: (e.start, e.end)))))
    return rows, problems


def check_spans(row: SpanRow, labels: set[str] | None = None) -> list[Problem]:
    """Overlapping spans, spans off word boundaries (with the characters they would lose), unknown labels."""
    problems = []
    for before, after in zip(row.entities, row.entities[1:]):
        if after.start < before.end:
            problems.append(Problem(row.where, f"entities {before.label} [{before.start}, {before.end}) and {after.label} "
                                    f"[{after.start}, {after.end}) overlap", "keep one of them: tags cannot nest"))
    boundaries = [(m.start(), m.end()) for m in _WORD.finditer(row.text)]
    starts, ends = {s for s, _ in boundaries}, {e for _, e in boundaries}
    for entity in row.entities:
        if entity.start not in starts or entity.end not in ends:
            inside = [(s, e) for s, e in boundaries if s < entity.end and e > entity.start]
            lost = sum(max(0, entity.start - s) + max(0, e - entity.end) for s, e in inside)
            problems.append(Problem(row.where, f"entity {entity.label} {row.text[entity.start:entity.end]!r} does not "
                                    f"start and end on word boundaries ({lost} characters of its words fall outside)",
                                    "move its offsets to the word boundaries"))
        if labels is not None and entity.label not in labels:
            problems.append(Problem(row.where, f"unknown entity type {entity.label!r}",
                                    f"use one of {', '.join(sorted(labels))}"))
    return problems


def read_entity_rows(path: str | Path, labels: set[str] | None = None) -> tuple[list[SpanRow], list[Problem]]:
    """Rows of a .conll/.txt/.tsv/.bio tag file or a .jsonl span file, and every problem found in
    them (rows with a problem are still returned: the caller decides whether to leave them out)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file; give a CoNLL file (token and tag per line) or a JSONL file of spans")
    rows, problems = read_conll(path) if path.suffix.lower() in TAG_FILES else read_span_rows(path)
    for row in rows:
        problems += check_spans(row, labels)
    return rows, problems


def read_entity_file(path: str | Path, labels: set[str] | None = None) -> list[SpanRow]:
    """Rows of an entity file; a DataError lists every problem."""
    rows, problems = read_entity_rows(path, labels)
    if problems:
        raise DataError(f"{path}: {len(problems)} problems in the entity data:", problems)
    return rows


def tag_names(types: list[str]) -> list[str]:
    """The BIO tag set of entity `types`, in a fixed order: O, then B- and I- of each type."""
    return ["O", *(f"{prefix}-{kind}" for kind in types for prefix in ("B", "I"))]


def word_tags(text: str, entities: tuple[Entity, ...] | list[Entity]) -> list[str]:
    """The BIO tag of every word of `text` (words as align_tags splits them), for entity-level scoring."""
    tags = []
    for start, _ in words_of(text):
        entity = next((e for e in entities if e.start <= start < e.end), None)
        tags.append("O" if entity is None else f"{'B' if start == entity.start else 'I'}-{entity.label}")
    return tags


def words_of(text: str) -> list[tuple[int, int]]:
    """The (start, end) of each word: a run of letters and digits, or one punctuation mark."""
    return [m.span() for m in _WORD.finditer(text)]


def word_of_tokens(text: str, offsets: list[tuple[int, int]]) -> list[int | None]:
    """For each sub-token, the index of the word it tags: the first run of letters and digits that
    starts inside the token, else the word its first visible character falls in; None for special
    tokens and bare spaces. Byte-level tokenizers put the leading space inside a token (" York") and
    glue punctuation to the letters after it ("'s", '"The') or to more punctuation (".),"): "'s" tags
    the word "s", so "Macy's" keeps its last word, and ".)," tags ".", so "Inc.)," can end an entity
    at its period. Punctuation no token tags lies inside an entity exactly when words of that entity
    lie on both sides of it (a span runs from its first word's start to its last word's end)."""
    words = words_of(text)
    starts = [start for start, _ in words]
    result: list[int | None] = []
    for start, end in offsets:
        visible = start
        while visible < end and text[visible].isspace():
            visible += 1
        if visible >= end:
            result.append(None)
            continue
        starting = range(bisect.bisect_left(starts, visible), bisect.bisect_left(starts, end))
        letters = next((index for index in starting if _LETTER.match(text, starts[index])), None)
        index = bisect.bisect_right(starts, visible) - 1
        result.append(letters if letters is not None else index if index >= 0 and visible < words[index][1] else None)
    return result


def align_tags(text: str, offsets: list[tuple[int, int]], entities: tuple[Entity, ...], label_ids: dict[str, int]) -> list[int]:
    """BIO label ids for a tokenized text: the first sub-token of each word gets the word's tag; later
    sub-tokens of the word, special tokens and bare spaces get IGNORE (as transformers' token-
    classification examples label them)."""
    words = words_of(text)
    result, seen = [], set()
    for word in word_of_tokens(text, offsets):
        if word is None or word in seen:
            result.append(IGNORE)
            continue
        seen.add(word)
        start = words[word][0]
        tag = "O"
        for entity in entities:
            if entity.start <= start < entity.end:
                tag = f"{'B' if start == entity.start else 'I'}-{entity.label}"
                break
        result.append(label_ids[tag])
    return result


def spans_from_tags(text: str, offsets: list[tuple[int, int]], tag_ids: list[int],
                    id_to_tag: dict[int, str]) -> tuple[Entity, ...]:
    """Entities back from the tag predicted at each word's first sub-token (the inverse of align_tags)."""
    words = words_of(text)
    first_tag: dict[int, str] = {}
    for word, tag in zip(word_of_tokens(text, offsets), tag_ids):
        if word is not None and word not in first_tag:
            first_tag[word] = id_to_tag[tag]
    order = sorted(first_tag)
    found, _ = tags_to_entities([first_tag[w] for w in order], "BIO")
    return tuple(Entity(words[order[a]][0], words[order[b - 1]][1], label) for a, b, label in found)


def untaggable(text: str, offsets: list[tuple[int, int]], entities: tuple[Entity, ...], aligned: list[int],
               tags: list[str]) -> list[tuple[Entity, str | None]]:
    """The entities that even a perfect tagger could not give back from this tokenization (`aligned`:
    align_tags' labels), each with the text it would give instead (None: nothing): a token that
    glues an entity's last word to the next ("++" of "C++") tags only its first word."""
    back = spans_from_tags(text, offsets, [0 if tag == IGNORE else tag for tag in aligned], dict(enumerate(tags)))
    return [(entity, next((text[b.start:b.end] for b in back if b.label == entity.label and b.start < entity.end
                           and entity.start < b.end), None)) for entity in entities if entity not in back]
