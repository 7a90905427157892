"""Read a data source into records: one dict per row, each remembering its file and line.

A row that cannot even be read (bad JSON, a CSV row with the wrong number of fields) becomes a
record with an `error` instead of stopping the read, so that every problem is reported at once.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from tunesmith.errors import DataError

TABLE_SUFFIXES = {".jsonl", ".json", ".csv", ".tsv", ".parquet"}
TEXT_SUFFIXES = {".txt", ".md"}
# json.loads recurses once per level of nesting and raises RecursionError past Python's limit
_TOO_DEEP = "the JSON is nested too deeply to read (hundreds of levels); a row is an object of fields: fix or remove it"


@dataclass(frozen=True)
class Record:
    """One row as read, before its format is known."""

    source: str
    line: int
    data: dict[str, Any] | None
    error: str | None = None

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"


def read_records(path: str | Path) -> list[Record]:
    """All rows of a .jsonl/.json/.csv/.tsv/.parquet file, or one row per file of a text folder."""
    path = Path(path)
    if path.is_dir():
        return list(_read_text_folder(path))
    if not path.exists():
        raise DataError(f"{path}: no such file or folder; check the path (or `tunesmith data list` for named datasets)")
    suffix = path.suffix.lower()
    readers = {
        ".jsonl": _read_jsonl,
        ".json": _read_json,
        ".csv": lambda p: _read_delimited(p, ","),
        ".tsv": lambda p: _read_delimited(p, "\t"),
        ".parquet": _read_parquet,
        ".txt": _read_text_file,
        ".md": _read_text_file,
    }
    if suffix not in readers:
        known = ", ".join(sorted(readers))
        raise DataError(f"{path}: unsupported file type '{suffix}'; use one of {known}, or a folder of .txt files")
    records = list(readers[suffix](path))
    if not records:
        raise DataError(f"{path}: the file has no rows; add examples or point at another file")
    return records


def _read_jsonl(path: Path) -> Iterator[Record]:
    with _open_binary(path) as handle:
        for number, raw in enumerate(handle, start=1):
            if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
                raw = raw[3:]
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                yield Record(str(path), number, None, "line is not UTF-8 text; re-save the file as UTF-8")
                continue
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as exc:
                yield Record(str(path), number, None, f"invalid JSON ({exc.msg} at column {exc.colno}); fix the line or remove it")
                continue
            except RecursionError:
                yield Record(str(path), number, None, _TOO_DEEP)
                continue
            yield _as_record(path, number, value)


def _read_json(path: Path) -> Iterator[Record]:
    """A JSON array of objects (or one object with a list under a key such as `data`)."""
    text = _read_text(path)
    decoder = json.JSONDecoder()
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        # The file as a whole is broken; report where, since nothing after that point can be trusted.
        yield Record(str(path), exc.lineno, None, f"invalid JSON ({exc.msg} at column {exc.colno}); fix the file (a .jsonl file takes one object per line)")
        return
    except RecursionError:
        yield Record(str(path), 1, None, _TOO_DEEP)
        return
    if isinstance(value, dict):
        lists = [key for key, item in value.items() if isinstance(item, list)]
        if len(lists) != 1:
            yield _as_record(path, 1, value)
            return
        value = value[lists[0]]
        start = text.index("[")
    elif isinstance(value, list):
        start = text.index("[")
    else:
        raise DataError(f"{path}: expected a JSON array of objects, got {type(value).__name__}")
    # Walk the array again with raw_decode to learn the line each element starts on.
    index = start + 1
    for item in value:
        while text[index] in " \t\r\n,":
            index += 1
        line = text.count("\n", 0, index) + 1
        _, index = decoder.raw_decode(text, index)
        yield _as_record(path, line, item)


def _read_delimited(path: Path, delimiter: str) -> Iterator[Record]:
    with io.StringIO(_read_text(path), newline="") as handle:
        reader = csv.reader(handle, delimiter=delimiter)
        try:
            header = next(reader)
        except StopIteration:
            return
        header = [name.strip() for name in header]
        line = reader.line_num + 1
        for row in reader:
            if not any(cell.strip() for cell in row):
                line = reader.line_num + 1
                continue
            if len(row) != len(header):
                yield Record(str(path), line, None, f"row has {len(row)} fields but the header has {len(header)}; quote fields that contain '{delimiter}' or newlines")
            else:
                yield Record(str(path), line, dict(zip(header, row)))
            line = reader.line_num + 1


def _read_parquet(path: Path) -> Iterator[Record]:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:
        raise DataError(f"{path}: not a readable Parquet file ({exc}); check that it is complete") from exc
    for number, row in enumerate(table.to_pylist(), start=1):
        yield _as_record(path, number, row)


def _read_text_file(path: Path) -> Iterator[Record]:
    yield Record(str(path), 1, {"text": _read_text(path)})


def _read_text_folder(folder: Path) -> Iterator[Record]:
    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in TEXT_SUFFIXES)
    if not files:
        raise DataError(f"{folder}: the folder has no .txt or .md files; add some or point at a data file")
    for file in files:
        yield from _read_text_file(file)


def _as_record(path: Path, line: int, value: Any) -> Record:
    if not isinstance(value, dict):
        return Record(str(path), line, None, f"row is a {type(value).__name__}, not an object with fields; wrap it as {{\"text\": ...}} or {{\"messages\": [...]}}")
    return Record(str(path), line, value)


def _open_binary(path: Path) -> BinaryIO:
    try:
        return open(path, "rb")
    except OSError as exc:
        raise DataError(f"{path}: cannot be opened ({exc.strerror}); check its permissions") from exc


def _read_text(path: Path) -> str:
    with _open_binary(path) as handle:
        raw = handle.read()
    try:
        # utf-8-sig: spreadsheets and some exporters write a byte-order mark.
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{path}:{line}: not UTF-8 text; re-save the file as UTF-8") from None
