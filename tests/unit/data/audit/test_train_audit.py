"""tunesmith train runs the audit first: its summary with data.audit=warn, a stop with strict."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.config import build_config
from tunesmith.errors import DataError
from tunesmith.pipeline.train import audit_before_training


def test_strict_audit_stops_before_any_model_loads_and_names_the_rows(tmp_path: Path, capsys):
    rows = [{"messages": [{"role": "user", "content": f"question number {i} about the weather today"},
                          {"role": "assistant", "content": f"answer {i}"}]} for i in range(20)]
    rows.append(rows[3])
    rows.append({"messages": [{"role": "user", "content": "reach me at ann@example.com"},
                              {"role": "assistant", "content": "ok"}]})
    train = tmp_path / "train.jsonl"
    train.write_text("".join(json.dumps(row) + "\n" for row in rows))
    settings = {"data": {"train": str(train)}, "model": {"name": str(tmp_path / "no-such-model")}}
    audit_before_training(build_config(settings))
    printed = capsys.readouterr().err
    assert "1 groups of exact duplicates" in printed and "EMAIL in 1 rows" in printed
    with pytest.raises(DataError) as raised:
        audit_before_training(build_config({**settings, "data": {**settings["data"], "audit": "strict"}}))
    message = str(raised.value)
    assert "data.audit=strict" in message and f"{train}:4: duplicated at {train}:21" in message and f"{train}:22: holds EMAIL" in message
    capsys.readouterr()
    audit_before_training(build_config({**settings, "data": {**settings["data"], "audit": "off"}}))
    assert capsys.readouterr().err == ""
