"""Bias slices: label rates per group in the data, accuracy per group in evaluation, and the gap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tunesmith.data.audit import run_audit
from tunesmith.data.audit.slices import load_groups, rows_by_group
from tunesmith.errors import ConfigError
from tunesmith.eval.metrics import metrics_by_group


def groups_file(tmp_path: Path) -> Path:
    path = tmp_path / "groups.yaml"
    path.write_text("women: [she, her, woman]\nmen: [he, his, man]\n")
    return path


def test_a_planted_gap_between_groups_is_measured(tmp_path: Path):
    groups = load_groups(groups_file(tmp_path))
    texts = ["she was great"] * 10 + ["he was great"] * 10 + ["the film"] * 5
    gold = ["pos"] * 25
    predicted = ["pos"] * 9 + ["neg"] + ["pos"] * 5 + ["neg"] * 5 + ["pos"] * 5  # women 0.9, men 0.5
    found = metrics_by_group(rows_by_group(texts, groups), gold, predicted, ["neg", "pos"])
    assert found["groups"]["women"]["rows"] == 10 and found["groups"]["women"]["accuracy"] == 0.9
    assert found["groups"]["men"]["rows"] == 10 and found["groups"]["men"]["accuracy"] == 0.5
    assert found["gap"]["accuracy"] == pytest.approx(0.4)
    assert rows_by_group(["History of the shell"], groups)["women"] == []  # whole words


def test_data_audit_reports_label_rates_per_group(tmp_path: Path):
    rows = [{"text": "she acted well", "label": "positive"}] * 8 + [{"text": "she acted badly", "label": "negative"}] * 2 + \
           [{"text": "he acted well", "label": "positive"}] * 3 + [{"text": "he acted badly", "label": "negative"}] * 7
    path = tmp_path / "rows.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    report = run_audit(path, groups=groups_file(tmp_path))
    assert report.groups["women"]["label_rates"]["positive"] == pytest.approx(0.8)
    assert report.groups["men"]["label_rates"]["positive"] == pytest.approx(0.3)
    assert any(line.startswith("group men: 10 rows") for line in report.summary_lines())


def test_a_bad_groups_file_names_the_fix(tmp_path: Path):
    bad = tmp_path / "g.yaml"
    bad.write_text("women: she\n")
    with pytest.raises(ConfigError, match="list of terms"):
        load_groups(bad)
