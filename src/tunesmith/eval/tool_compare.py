"""Tool use evaluated: the base model zero-shot and few-shot and the fine-tuned model on held-out rows
with tool calls (OpenAI's chat rows with `tools`), the same rows and the same greedy decoding.

Two views, each figure with its paired 95% bootstrap interval:
- turn by turn: every assistant turn of a row, asked with the conversation before it (the reference's
  calls and real tool results): call accuracy (the right functions, or rightly none), arguments exact
  after JSON normalization, per-argument accuracy, and the share of calls that parse and validate
  against their tool's schema (eval/tool_calls.py); intervals over the turns;
- end to end, for rows with an `answer` whose tools tunesmith runs (the `tool-tasks` set): the model
  answers the question with the tools running for real, round after round, and the row is right only
  when its calls and its final answer are (eval/tool_loop.py); intervals over the rows.
The model's calls are read from its text as the server reads them (models/tool_calls.py).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from tunesmith.config import EvalConfig
from tunesmith.data.formats import openai_messages
from tunesmith.data.tool_task import TOOL_SCHEMAS
from tunesmith.eval.intervals import Interval
from tunesmith.eval.tables import cell, gain_verdict, text_table
from tunesmith.eval.tool_calls import (
    METRICS,
    TurnScore,
    reference_turns,
    score_turn,
    summarize,
    tool_call_intervals,
)
from tunesmith.eval.tool_loop import (
    END_TO_END_METRICS,
    Answer,
    Ask,
    RowResult,
    end_to_end_intervals,
    run_rows,
)
from tunesmith.models.generate import LoadedModel, generate
from tunesmith.models.tool_calls import parse_tool_calls
from tunesmith.progress import Stage

NAMES = {"call_accuracy": "call accuracy", "arguments_exact": "arguments exact", "argument_accuracy": "argument accuracy",
         "schema_valid": "valid calls", "right": "end to end"}


@dataclass
class ToolSystem:
    name: str
    model: str
    turns: list[TurnScore]
    rows: list[RowResult] | None  # end to end; None when the rows' tools are not ones tunesmith runs
    seconds: float
    metrics: dict[str, float | None] = field(default_factory=dict)


@dataclass
class ToolComparison:
    where: list[str]  # each row's file:line
    systems: list[ToolSystem]
    few_shot: int = 0
    intervals: dict[str, dict[str, dict[str, Interval | None]]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    tuned: str | None = "fine-tuned"

    @property
    def headline(self) -> list[str]:
        return [*METRICS, *(["right"] if self.systems and self.systems[0].rows is not None else [])]

    @property
    def primary(self) -> str:
        return "right" if "right" in self.headline else "call_accuracy"

    def cells(self) -> tuple[list[str], list[list[str]]]:
        gains = self.intervals.get("gains", {})
        header = ["system", *(f"{NAMES[m]} [95%]" for m in self.headline),
                  *([f"{self.tuned} gain ({NAMES[self.primary]})"] if gains else []), "seconds"]
        rows = []
        for s in self.systems:
            gain = gains.get(s.name, {}).get(self.primary)
            rows.append([s.name, *(cell(s.metrics.get(m), self.intervals["systems"][s.name].get(m)) for m in self.headline),
                         *([cell(gain.estimate, gain, signed=True) if gain else ""] if gains else []), f"{s.seconds:.0f}"])
        return header, rows

    def table(self) -> str:
        return text_table(*self.cells())

    def verdict(self) -> str:
        return gain_verdict(self.systems, self.intervals.get("gains", {}), self.primary, NAMES[self.primary], self.tuned)

    def as_dict(self) -> dict[str, Any]:
        return {"kind": "tools", "rows": len(self.where), "few_shot": self.few_shot, "notes": self.notes,
                "systems": {s.name: {"model": s.model, "seconds": round(s.seconds, 2), **s.metrics} for s in self.systems},
                "intervals": {part: {name: {m: i.as_dict() if i else None for m, i in metrics.items()}
                                     for name, metrics in by_name.items()} for part, by_name in self.intervals.items()}}


def runs_our_tools(rows: Sequence[Mapping[str, Any]]) -> bool:
    """Whether every row can be answered end to end here: its tools are tool-tasks' and it has an answer."""
    ours = {json.dumps(schema, sort_keys=True) for schema in TOOL_SCHEMAS}
    return all("answer" in row and all(json.dumps(t, sort_keys=True) in ours for t in row.get("tools") or [])
               for row in rows)


def responder(loaded: LoadedModel, settings: EvalConfig, shots: Sequence[dict[str, Any]] = (),
              progress: Callable[[int], None] | None = None) -> Callable[[list[Ask]], list[Answer]]:
    """The model answering a batch of asks (messages, tools): greedy, its calls read from its text.
    `shots`: solved conversations put before each ask's own messages (few-shot)."""
    def answer(asks: list[Ask]) -> list[Answer]:
        replies: list[Answer] = [("", [])] * len(asks)
        by_tools: dict[str, list[int]] = {}
        for number, (_, tools) in enumerate(asks):
            by_tools.setdefault(json.dumps(tools, sort_keys=True), []).append(number)
        for key, numbers in by_tools.items():
            prompts = [_with_shots(asks[n][0], shots) for n in numbers]
            generated = generate(loaded, prompts, max_new_tokens=settings.max_new_tokens, batch_size=settings.batch_size,
                                 tools=json.loads(key), progress=progress)
            for number, text in zip(numbers, generated.texts):
                replies[number] = read_reply(text)
        return replies
    return answer


def read_reply(text: str) -> Answer:
    """(content, calls) of a reply: `<tool_call>` blocks as the server reads them, or, fair to a base
    model that writes its call as bare JSON (Qwen2.5-Coder does, asked with tools), a reply that is
    only a JSON object with a name and arguments (or a list of them)."""
    content, calls = parse_tool_calls(text)
    if calls:
        return content or "", [(call.name, call.arguments) for call in calls]
    try:
        value = json.loads(text.strip().removeprefix("```json").removeprefix("```").removesuffix("```"))
    except ValueError:
        return text, []
    objects = value if isinstance(value, list) else [value]
    if objects and all(isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("arguments"), dict)
                       for o in objects):
        return "", [(o["name"], json.dumps(o["arguments"], ensure_ascii=False)) for o in objects]
    return text, []


def _with_shots(messages: list[dict[str, Any]], shots: Sequence[dict[str, Any]]) -> list:
    system = [m for m in messages if m["role"] == "system"]
    turns = [m for shot in shots for m in shot["messages"] if m["role"] != "system"]
    return openai_messages([*system, *turns, *(m for m in messages if m["role"] != "system")])


def evaluate_tool_system(loaded: LoadedModel, name: str, rows: Sequence[Mapping[str, Any]], settings: EvalConfig,
                         shots: Sequence[dict[str, Any]] = (), end_to_end: bool = True) -> ToolSystem:
    """One model on the rows: every reference turn, then (with `end_to_end`) every row answered with the tools running."""
    started = time.perf_counter()
    turns = [(turn, row) for row in rows for turn in reference_turns(row)]
    with Stage(f"evaluating {name}", len(turns) + (len(rows) if end_to_end else 0)) as stage:
        answer = responder(loaded, settings, shots, stage.advance)
        replies = answer([(list(turn.messages), list(row.get("tools") or [])) for turn, row in turns])
        scores = [score_turn(turn.reference, calls, row.get("tools") or []) for (turn, row), (_, calls) in zip(turns, replies)]
        answered = run_rows(rows, responder(loaded, settings, shots)) if end_to_end else None
        if answered is not None:
            stage.advance(len(rows))
    system = ToolSystem(name, loaded.name, scores, answered, time.perf_counter() - started, summarize(scores))
    if answered is not None:
        system.metrics.update({metric: sum(getattr(r, metric) for r in answered) / len(answered)
                               for metric in END_TO_END_METRICS})
    return system


def add_tool_intervals(comparison: ToolComparison, resamples: int, seed: int = 0) -> None:
    """Turn metrics' intervals over the turns and end-to-end ones over the rows, merged per system."""
    found = tool_call_intervals({s.name: s.turns for s in comparison.systems}, comparison.tuned,
                                resamples=resamples, seed=seed)
    if all(s.rows is not None for s in comparison.systems):
        ends = end_to_end_intervals({s.name: s.rows for s in comparison.systems}, comparison.tuned,
                                    resamples=resamples, seed=seed)
        for part, by_name in ends.items():
            for name, metrics in by_name.items():
                found[part].setdefault(name, {}).update(metrics)
    comparison.intervals = found
