"""metrics.jsonl survives a kill mid-write: a torn last line never stops a resume."""

from __future__ import annotations

import json
from pathlib import Path

from tunesmith.training.metrics import MetricsLog, read_metrics


def test_a_torn_last_line_is_dropped_on_resume(tmp_path: Path):
    path = tmp_path / "metrics.jsonl"
    path.write_text("".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in range(1, 6)) + '{"step": 6, "lo')
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3, 4, 5]
    log = MetricsLog(path, resume_step=3)
    log.write({"step": 4, "loss": 0.5})
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [1, 2, 3, 4]
