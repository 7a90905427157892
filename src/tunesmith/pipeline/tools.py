"""The evaluation after training on rows with tool calls: base zero-shot, base few-shot and the
fine-tuned model, turn by turn and end to end (eval/tool_compare.py); writes eval/ and the report."""

from __future__ import annotations

import gc
import json
import random
from pathlib import Path
from typing import Any

from tunesmith.config import EvalConfig
from tunesmith.data.catalog import resolve_data_path
from tunesmith.data.read import read_records
from tunesmith.eval.items import subset
from tunesmith.eval.report import print_comparison, write_report
from tunesmith.eval.tool_compare import (
    ToolComparison,
    add_tool_intervals,
    evaluate_tool_system,
    runs_our_tools,
)
from tunesmith.files import write_atomic
from tunesmith.models.generate import load_for_generation
from tunesmith.pipeline.folder import run_config


def tool_rows(source: str, limit: int | None = None) -> list[dict[str, Any]]:
    """The rows of `source` that declare tools ([] when none does: not a tool-use set)."""
    path = resolve_data_path(source)
    if not path.is_file():
        return []
    rows = [{**record.data, "_where": record.where} for record in read_records(path) if isinstance(record.data, dict)]
    return subset(rows, limit) if any(row.get("tools") for row in rows) else []


def evaluate_tool_run(run_dir: Path, rows: list[dict[str, Any]], settings: EvalConfig, *, show: bool = True) -> ToolComparison:
    run_dir = Path(run_dir)
    config = run_config(run_dir)
    manifest = json.loads((run_dir / "manifest.json").read_text())
    shots = pick_shots(tool_rows(config.data.train) if settings.few_shot else [], rows, settings.few_shot, config.train.seed)
    end_to_end = runs_our_tools(rows)
    tuned = load_for_generation(str(run_dir), precision=settings.precision)
    template = tuned.tokenizer.chat_template
    tuned_result = evaluate_tool_system(tuned, "fine-tuned", rows, settings, end_to_end=end_to_end)
    del tuned
    gc.collect()
    base = load_for_generation(manifest["base_model"]["spec"], chat_template=template, precision=settings.precision)
    systems = [evaluate_tool_system(base, "base zero-shot", rows, settings, end_to_end=end_to_end)]
    if shots:
        systems.append(evaluate_tool_system(base, f"base {len(shots)}-shot", rows, settings, shots, end_to_end))
    comparison = ToolComparison([row.get("_where", f"row {n + 1}") for n, row in enumerate(rows)], [*systems, tuned_result],
                                len(shots))
    if not end_to_end:
        comparison.notes.append("end to end not scored: the rows' tools are not tool-tasks' tools, which tunesmith runs")
    add_tool_intervals(comparison, settings.resamples, config.train.seed)
    save_tool_comparison(comparison, run_dir / "eval")
    reports = write_report(run_dir, None, tools=comparison)
    if show:
        print_comparison(comparison, *reports)
    return comparison


def pick_shots(pool: list[dict[str, Any]], rows: list[dict[str, Any]], k: int, seed: int) -> list[dict[str, Any]]:
    """k solved training conversations shown before every row (one seeded draw, as few_shot_selection
    fixed), none asking a held-out row's question, those with tool calls first so the shots show calls."""
    asked = {_question(row) for row in rows}
    candidates = [row for row in pool if _question(row) not in asked]
    random.Random(f"{seed}-tool-shots").shuffle(candidates)
    candidates.sort(key=lambda row: not any(m.get("tool_calls") for m in row["messages"]))
    return candidates[:k]


def _question(row: dict[str, Any]) -> str:
    return next((m.get("content") or "" for m in row["messages"] if m["role"] == "user"), "")


def save_tool_comparison(comparison: ToolComparison, folder: Path) -> None:
    """comparison.json (every metric with its interval) and predictions.jsonl (each row's exchange per system)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / "comparison.json", json.dumps(comparison.as_dict(), indent=1))
    lines = []
    for number, where in enumerate(comparison.where):
        row: dict[str, Any] = {"where": where}
        for system in comparison.systems:
            if system.rows is not None:
                result = system.rows[number]
                row[system.name] = {"right": result.right, "calls": [list(call) for call in result.calls],
                                    "answer": result.final_text}
        lines.append(json.dumps(row, ensure_ascii=False))
    write_atomic(folder / "predictions.jsonl", "\n".join(lines) + "\n")
