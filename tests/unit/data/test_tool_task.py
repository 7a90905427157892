"""tool-tasks: the tools compute what Python and the unit definitions say, refuse anything but their
own arguments, and the generated rows are exactly what running the tools gives, split without overlap."""

from __future__ import annotations

import json
import random
import re
from collections import Counter

import jsonschema
import pytest

from tunesmith.data.catalog import dataset_path, parse_name
from tunesmith.data.tool_task import (
    COMPANIES,
    TOOL_SCHEMAS,
    ToolError,
    calculate,
    company_lookup,
    convert_units,
    format_figure,
    mentions,
    run_tool,
    tool_tasks,
)

SCHEMAS = {schema["function"]["name"]: schema["function"]["parameters"] for schema in TOOL_SCHEMAS}


def _random_expression(rng: random.Random, depth: int = 0) -> str:
    """Arithmetic as a person might type it: ints and decimals, signs, + - * / **, nested parentheses."""
    if depth >= 3 or rng.random() < 0.3:
        number = str(rng.randint(0, 60)) if rng.random() < 0.6 else f"{rng.uniform(0, 60):.{rng.randint(1, 3)}f}"
        return f"-{number}" if rng.random() < 0.15 else number
    operator = rng.choice(["+", "-", "*", "/", "**"])
    left = _random_expression(rng, depth + 1)
    right = str(rng.randint(0, 3)) if operator == "**" else _random_expression(rng, depth + 1)
    text = f"({left}) {operator} {right}" if operator == "**" else f"{left} {operator} {right}"
    return f"({text})" if rng.random() < 0.5 else text


def test_the_calculator_computes_what_python_computes_on_many_expressions():
    rng = random.Random(11)
    checked = zero_divisions = 0
    for _ in range(3000):
        expression = _random_expression(rng)
        try:
            expected = eval(expression, {"__builtins__": {}})  # the oracle: Python's own arithmetic on our own string
        except ZeroDivisionError:
            with pytest.raises(ToolError, match="divides by zero"):
                calculate(expression)
            zero_divisions += 1
            continue
        if isinstance(expected, complex) or abs(expected) > 1e300:
            continue
        value = calculate(expression)
        assert value == expected and type(value) is type(expected), expression
        checked += 1
    assert checked > 2500 and zero_divisions > 10


@pytest.mark.parametrize("expression, why", [
    ("__import__('os').system('echo hacked')", "contains"), ("x + 1", "contains 'x'"), ("abs(-3)", "contains 'abs(-3)'"),
    ("(1).real", "contains '(1).real'"), ("7 % 2", "contains '7 % 2'"), ("7 // 2", "contains"), ("True + 1", "'True'"),
    ("2j", "contains"), ("[1, 2]", "contains"), ("'a' * 3", "contains"), ("1 if 2 else 3", "contains"),
    ("1; 2", "not an arithmetic expression"), ("", "empty"), ("9 ** 9 ** 9", "too large"), ("1e308 * 10", "too large"),
    ("(-8) ** 0.5", "no real value"), ("2 / (3 - 3)", "divides by zero"), ("1 +" * 300 + "1", "characters"),
])
def test_the_calculator_refuses_anything_but_arithmetic(expression, why):
    with pytest.raises(ToolError, match=re.escape(why)) as refused:
        calculate(expression)
    assert str(refused.value).startswith("calculator: ")
    assert "error" in json.loads(run_tool("calculator", {"expression": expression}))


@pytest.mark.parametrize("value, from_unit, to_unit, expected", [
    (1, "mi", "km", 1.609344), (5280, "ft", "mi", 1.0), (1, "ft", "m", 0.3048), (26.21875, "mi", "km", 42.194988),
    (1, "lb", "kg", 0.45359237), (1, "kg", "lb", 2.2046226218), (1, "gal", "l", 3.785411784), (10, "l", "gal", 2.6417205236),
    (100, "C", "F", 212.0), (0, "C", "F", 32.0), (-40, "F", "C", -40.0), (98.6, "F", "C", 37.0), (3.5, "km", "m", 3500.0),
    (2.5, "kg", "kg", 2.5),
])
def test_unit_conversions_match_the_definitions(value, from_unit, to_unit, expected):
    assert convert_units(value, from_unit, to_unit) == pytest.approx(expected, rel=1e-9)
    assert convert_units(convert_units(value, from_unit, to_unit), to_unit, from_unit) == pytest.approx(value, rel=1e-12)


def test_tools_answer_bad_calls_with_an_error_the_model_can_read():
    def error(name, arguments):
        return json.loads(run_tool(name, arguments))["error"]

    assert "cannot convert km (length) to kg (mass)" in error("convert_units", {"value": 3, "from_unit": "km", "to_unit": "kg"})
    assert "schema" in error("convert_units", {"value": "3", "from_unit": "km", "to_unit": "mi"})
    assert "schema" in error("convert_units", {"value": 3, "from_unit": "yards", "to_unit": "mi"})
    assert "schema" in error("calculator", {"expression": "1 + 1", "precision": 2})
    assert "not JSON" in error("calculator", '{"expression": "1 + 1"')
    assert "no tool named 'weather'" in error("weather", {})
    assert "Zentrix Robotics" in error("company_lookup", {"company": "Acme", "metric": "revenue"})
    assert company_lookup("  zentrix   ROBOTICS ", "revenue") == {"company": "Zentrix Robotics", "metric": "revenue",
                                                              "value": 412.5, "unit": "million USD"}
    assert json.loads(run_tool("calculator", '{"expression": "0.1 + 0.2"}')) == {"result": 0.3}
    with pytest.raises(ToolError, match="finite number"):
        convert_units(True, "km", "mi")


def test_the_tool_schemas_are_valid_json_schema_in_openai_function_shape():
    assert [schema["function"]["name"] for schema in TOOL_SCHEMAS] == ["calculator", "convert_units", "company_lookup"]
    for schema in TOOL_SCHEMAS:
        assert schema["type"] == "function" and schema["function"]["description"]
        jsonschema.Draft202012Validator.check_schema(schema["function"]["parameters"])


def _calls_and_results(row):
    """Every (call, result message) pair of a row, in order."""
    results = {m["tool_call_id"]: m for m in row["messages"] if m["role"] == "tool"}
    for message in row["messages"]:
        for call in message.get("tool_calls", []):
            yield call, results.pop(call["id"])
    assert not results, "a tool message answers no call"


def test_every_row_calls_tools_as_their_schemas_say_and_holds_the_real_results():
    parts = tool_tasks()
    for row in parts["train"] + parts["test"]:
        assert row["tools"] == TOOL_SCHEMAS
        roles = [m["role"] for m in row["messages"]]
        assert roles[roles[0] == "system"] == "user" and roles[-1] == "assistant" and "tool_calls" not in row["messages"][-1]
        for call, result in _calls_and_results(row):
            arguments = json.loads(call["function"]["arguments"])
            jsonschema.validate(arguments, SCHEMAS[call["function"]["name"]])
            assert result["content"] == run_tool(call["function"]["name"], call["function"]["arguments"])
            assert "error" not in json.loads(result["content"]), row
        question, final = row["messages"][roles.index("user")]["content"], row["messages"][-1]["content"]
        assert row["answer"] and all(mentions(final, figure) for figure in row["answer"]), row
        assert not any(mentions(question, figure) for figure in row["answer"]), row


def test_the_answers_are_the_tools_results():
    """The key figure is the last tool result, rounded as the final answer states it."""
    for row in tool_tasks()["test"]:
        results = [json.loads(result["content"]) for _, result in _calls_and_results(row)]
        if row["task"] in ("calculator", "revenue_difference", "combined_employees", "revenue_per_employee",
                           "convert_then_add"):
            assert row["answer"] == [format_figure(results[-1]["result"])]
        elif row["task"] in ("convert_units", "two_conversions"):
            assert row["answer"] == [format_figure(result["value"]) for result in results]
        elif row["task"] == "company_lookup":
            assert row["answer"] == [str(COMPANIES[results[0]["company"]][results[0]["metric"]])]
        else:
            assert row["task"] == "no_tool" and not results


def test_the_splits_share_no_question_and_have_the_documented_mix():
    parts = tool_tasks()
    questions = {split: [next(m["content"] for m in row["messages"] if m["role"] == "user") for row in rows]
                 for split, rows in parts.items()}
    assert len(set(questions["train"])) == 600 and len(set(questions["test"])) == 150
    assert not set(questions["train"]) & set(questions["test"])
    rows = parts["train"] + parts["test"]
    no_tool = sum(not any(m["role"] == "tool" for m in row["messages"]) for row in rows)
    several = sum(sum(len(m.get("tool_calls", [])) for m in row["messages"]) >= 2 for row in rows)
    assert no_tool == Counter(row["task"] for row in rows)["no_tool"] == 113
    assert several == 240
    plain_answers = {split: {row["answer"][0] for row in parts[split] if row["task"] == "no_tool"} for split in parts}
    assert not plain_answers["train"] & plain_answers["test"]  # the direct questions are about other facts


def test_the_generator_is_deterministic_and_named_splits_resolve_to_cached_files():
    assert tool_tasks(seed=0) == tool_tasks(seed=0)
    assert tool_tasks(seed=0)["test"] != tool_tasks(seed=1)["test"]
    assert parse_name("tool-tasks:test") == ("tool-tasks", "test")
    paths = [dataset_path("tool-tasks", split) for split in ("train", "test", None)]
    first = [path.read_bytes() for path in paths]
    assert [len(content.splitlines()) for content in first] == [600, 150, 750]
    assert [json.loads(line) for line in first[1].splitlines()] == tool_tasks()["test"]
    for path in paths:
        path.unlink()
    assert [dataset_path("tool-tasks", split).read_bytes() for split in ("train", "test", None)] == first


@pytest.mark.parametrize("text, figure, stated", [
    ("It is 26.408 miles.", "26.41", True), ("It is 26.4 miles.", "26.41", False), ("about 26.41", "26.41", True),
    ("1,788 people", "1788", True), ("1788.4", "1788", True), ("17880", "1788", False), ("v1788", "1788", False),
    ("412.5 - 287.3 = 125.2", "-287.3", False), ("it is \u221240 degrees", "-40", True), ("-40", "40", False),
    ("Based in lyon.", "Lyon", True), ("Thelma", "he", False), ("Buenos Aires!", "buenos aires", True),
    ("a 1e400 figure", "1", False), ("It is 0.125", "0.13", True),
])
def test_a_figure_is_stated_when_a_number_rounds_to_it_or_the_words_appear(text, figure, stated):
    assert mentions(text, figure) is stated


def test_the_rows_read_as_chat_examples_with_their_tools_and_calls():
    from tunesmith.data.formats import choose_format, convert_records
    from tunesmith.data.read import read_records

    records = read_records(dataset_path("tool-tasks", "test"))
    examples, problems = convert_records(records, choose_format(records, "auto"), {})
    assert not problems and len(examples) == 150
    for example, row in zip(examples, tool_tasks()["test"]):
        assert example.kind == "chat" and list(example.tools) == TOOL_SCHEMAS
        assert [len(m.tool_calls) for m in example.messages] == [len(m.get("tool_calls", [])) for m in row["messages"]]
