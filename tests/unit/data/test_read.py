import json
from pathlib import Path

import pytest

from tunesmith.data.read import read_records
from tunesmith.errors import DataError


def test_jsonl_keeps_file_line_numbers_past_blank_and_broken_lines(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"text": "a"}\n\n{"text": "b"\n[1, 2]\n{"text": "c"}\n')
    records = read_records(path)
    assert [r.line for r in records] == [1, 3, 4, 5]
    assert records[0].data == {"text": "a"}
    assert "invalid JSON" in records[1].error
    assert "not an object" in records[2].error
    assert records[3].data == {"text": "c"} and records[3].where.endswith("rows.jsonl:5")


def test_json_array_elements_get_the_line_they_start_on(tmp_path: Path):
    path = tmp_path / "rows.json"
    path.write_text('[\n  {"text": "a"},\n\n  {"text":\n     "b"},\n  {"text": "c"}\n]\n')
    assert [r.line for r in read_records(path)] == [2, 4, 6]


def test_json_object_wrapping_one_list_is_read_as_rows(tmp_path: Path):
    path = tmp_path / "rows.json"
    path.write_text(json.dumps({"data": [{"text": "a"}, {"text": "b"}]}))
    assert [r.data["text"] for r in read_records(path)] == ["a", "b"]


def test_broken_json_file_reports_where(tmp_path: Path):
    path = tmp_path / "rows.json"
    path.write_text('[\n {"text": "a"},\n {"text": }\n]')
    (record,) = read_records(path)
    assert record.line == 3 and "invalid JSON" in record.error


def test_csv_line_numbers_count_quoted_newlines_and_short_rows_are_reported(tmp_path: Path):
    path = tmp_path / "rows.csv"
    path.write_text('\ufeffprompt,completion\n"two\nlines",x\nshort\n"a, b",y\n')
    records = read_records(path)
    assert [r.line for r in records] == [2, 4, 5]
    assert records[0].data == {"prompt": "two\nlines", "completion": "x"}
    assert "1 fields but the header has 2" in records[1].error
    assert records[2].data["prompt"] == "a, b"


def test_tsv_and_parquet(tmp_path: Path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    tsv = tmp_path / "rows.tsv"
    tsv.write_text("text\tlabel\nhello\tpos\n")
    assert read_records(tsv)[0].data == {"text": "hello", "label": "pos"}
    parquet = tmp_path / "rows.parquet"
    pq.write_table(pa.table({"text": ["x", "y"]}), parquet)
    assert [(r.line, r.data["text"]) for r in read_records(parquet)] == [(1, "x"), (2, "y")]


def test_text_folder_gives_one_row_per_file(tmp_path: Path):
    (tmp_path / "corpus" / "sub").mkdir(parents=True)
    (tmp_path / "corpus" / "a.txt").write_text("first")
    (tmp_path / "corpus" / "sub" / "b.md").write_text("# second")
    (tmp_path / "corpus" / "skip.bin").write_bytes(b"\0")
    records = read_records(tmp_path / "corpus")
    assert [r.data["text"] for r in records] == ["first", "# second"]


def test_non_utf8_line_is_reported_not_crashed_on(tmp_path: Path):
    path = tmp_path / "rows.jsonl"
    path.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    records = read_records(path)
    assert records[0].data and "not UTF-8" in records[1].error


@pytest.mark.parametrize(("name", "content", "message"), [
    ("rows.xlsx", "x", "unsupported file type '.xlsx'"),
    ("empty.jsonl", "\n\n", "has no rows"),
])
def test_unreadable_sources_name_the_file_and_the_fix(tmp_path: Path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(DataError, match=message):
        read_records(path)


def test_missing_file_is_a_data_error(tmp_path: Path):
    with pytest.raises(DataError, match="no such file"):
        read_records(tmp_path / "nope.jsonl")


def test_a_line_nested_thousands_of_levels_deep_is_named_not_a_traceback(tmp_path):
    from tunesmith.data.read import read_records

    path = tmp_path / "deep.jsonl"
    path.write_text('{"text": "fine"}\n' + '{"a": ' * 5000 + "1" + "}" * 5000 + '\n{"text": "also fine"}\n')
    records = read_records(path)
    assert [r.line for r in records] == [1, 2, 3]
    assert records[1].data is None and "nested too deeply" in records[1].error
    deep_json = tmp_path / "deep.json"
    deep_json.write_text("[" * 5000 + "]" * 5000)
    (only,) = read_records(deep_json)
    assert "nested too deeply" in only.error
