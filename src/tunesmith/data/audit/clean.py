"""`--dedupe` and `--scrub`: a new file, never the original changed."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from pathlib import Path
from typing import Any

from tunesmith.data.audit.duplicates import DuplicateGroup
from tunesmith.data.audit.pii import scrub
from tunesmith.data.read import read_records
from tunesmith.errors import ConfigError, DataError
from tunesmith.files import write_atomic


def write_cleaned(source: Path, target: Path, *, duplicates: list[DuplicateGroup] | None = None,
                  scrub_pii: bool = False) -> tuple[int, Counter]:
    """Rows of `source` into `target` (.jsonl or .csv), without all but the first row of each
    duplicate group, with personal data replaced by placeholders; (rows removed, placeholders by kind)."""
    source, target = Path(source), Path(target)
    if target.exists() and target.resolve() == source.resolve():
        raise ConfigError(f"{target}: the output would overwrite the input; give another -o path")
    if target.suffix.lower() not in (".jsonl", ".csv"):
        raise ConfigError(f"{target}: write the cleaned rows to a .jsonl or .csv file")
    drop = {where for group in duplicates or [] for where in group.rows[1:]}
    kept: list[dict[str, Any]] = []
    replaced: Counter = Counter()
    for record in read_records(source):
        if record.data is None:
            raise DataError(f"{record.where}: {record.error}; fix the row before cleaning the file")
        if record.where in drop:
            continue
        kept.append(_scrubbed(record.data, replaced) if scrub_pii else record.data)
    if target.suffix.lower() == ".jsonl":
        text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in kept)
    else:
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(dict.fromkeys(k for row in kept for k in row)))
        writer.writeheader()
        writer.writerows(kept)
        text = buffer.getvalue()
    target.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(target, text)
    return len(drop), replaced


def _scrubbed(value: Any, replaced: Counter) -> Any:
    if isinstance(value, str):
        text, found = scrub(value)
        replaced.update(f.kind for f in found)
        return text
    if isinstance(value, list):
        return [_scrubbed(item, replaced) for item in value]
    if isinstance(value, dict):
        return {key: _scrubbed(item, replaced) for key, item in value.items()}
    return value
