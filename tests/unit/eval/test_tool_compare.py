"""Reading a model's reply into calls as the tool evaluation does, and its table and verdict."""

from __future__ import annotations

import json

from tunesmith.eval.tool_calls import TurnScore
from tunesmith.eval.tool_compare import ToolComparison, ToolSystem, add_tool_intervals, read_reply
from tunesmith.eval.tool_loop import RowResult


def test_replies_with_tool_call_blocks_bare_json_or_plain_text():
    call = {"name": "calculator", "arguments": {"expression": "2+3"}}
    tagged = f"Let me compute.\n<tool_call>\n{json.dumps(call)}\n</tool_call>"
    assert read_reply(tagged) == ("Let me compute.", [("calculator", json.dumps(call["arguments"]))])
    assert read_reply(json.dumps(call)) == ("", [("calculator", '{"expression": "2+3"}')])
    assert read_reply(f"```json\n{json.dumps([call, call])}\n```")[1] == [("calculator", '{"expression": "2+3"}')] * 2
    assert read_reply("It is 5.") == ("It is 5.", [])
    assert read_reply('{"answer": 5}') == ('{"answer": 5}', [])  # JSON, but not a call
    assert read_reply('{"name": "calculator", "arguments": "2+3"}')[1] == []  # arguments must be an object


def _system(name: str, right: list[bool]) -> ToolSystem:
    turns = [TurnScore(r, r, int(r), 1, int(r), 1) for r in right]
    rows = [RowResult(r, r, r, True, (), "", ()) for r in right]
    system = ToolSystem(name, "m", turns, rows, 1.0)
    system.metrics = {"call_accuracy": sum(right) / len(right), "arguments_exact": sum(right) / len(right),
                      "argument_accuracy": sum(right) / len(right), "schema_valid": sum(right) / len(right),
                      "right": sum(right) / len(right)}
    return system


def test_the_table_has_each_score_and_the_gain_with_intervals_and_one_verdict():
    base = _system("base zero-shot", [True] * 5 + [False] * 35)
    tuned = _system("fine-tuned", [True] * 30 + [False] * 10)
    comparison = ToolComparison([f"r{n}" for n in range(40)], [base, tuned])
    add_tool_intervals(comparison, 500)
    header, rows = comparison.cells()
    assert header[-2] == "fine-tuned gain (end to end)" and "end to end [95%]" in header
    gain = comparison.intervals["gains"]["base zero-shot"]["right"]
    assert gain.estimate == 0.625 and gain.low > 0
    assert rows[0][-2] == f"+0.625 [{gain.low:+.3f}, {gain.high:+.3f}]"
    assert comparison.verdict().startswith("The end to end gain of fine-tuned over the best baseline (base zero-shot, 0.125) is above zero")
