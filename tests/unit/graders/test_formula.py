"""The multi grader's formula: OpenAI's arithmetic, evaluated without Python's eval, and nothing else."""

from __future__ import annotations

import math

import pytest

from tunesmith.graders import GraderError, run_grader, validate_grader
from tunesmith.graders.formula import FormulaError, evaluate_formula, parse_formula

NAMES = {"a", "b", "c"}
VALUES = {"a": 0.25, "b": 0.5, "c": 2.0}


@pytest.mark.parametrize(("formula", "expected"), [
    ("(a + b) / 2", 0.375),
    ("0.5 * a + 0.5 * b", 0.375),
    ("2 * c ^ 2", 8.0),  # ^ is power, binding tighter than *, as in OpenAI's formulas (Python's ^ is xor, looser)
    ("-c ^ 2", -4.0),
    ("c ^ 3 ^ 2", 2.0 ** 9),  # right-associative, as power is
    ("c ** 2", 4.0),
    ("min(a, b, c) + max(a, b)", 0.75),
    ("abs(a - b) + floor(c + 0.5) + ceil(a)", 0.25 + 2 + 1),
    ("exp(0) + sqrt(c * 8) + log(exp(a))", 1 + 4 + 0.25),
    ("log(8, c)", 3.0),
    ("1e-1 * c", 0.2),
])
def test_formulas_compute_what_openais_operators_and_functions_mean(formula: str, expected: float):
    assert evaluate_formula(parse_formula(formula, NAMES), VALUES) == pytest.approx(expected)


@pytest.mark.parametrize(("formula", "problem"), [
    ("__import__('os').system('echo hi')", "calls \"__import__('os').system\""),
    ("__import__('os')", "calls '__import__'"),
    ("a.__class__", "attribute 'a.__class__' is not allowed"),
    ("open('x')", "calls 'open'"),
    ("eval('1')", "calls 'eval'"),
    ("(lambda: 1)()", "calls 'lambda: 1'"),
    ("[a][0]", "is not allowed"),
    ("'text'", "'text' is not a number"),
    ("True + a", "True is not a number"),
    ("a if b else c", "is not allowed"),
    ("a < b", "is not allowed"),
    ("a and b", "is not allowed"),
    ("min(*[a])", "give min plain arguments"),
    ("max(a, key=b)", "give max plain arguments"),
    ("abs(a, b)", "abs takes 1 argument(s)"),
    ("min()", "min takes 1 or more argument(s)"),
    ("d + a", "'d' names no grader (the graders: a, b, c)"),
    ("sqrt", "'sqrt' names no grader"),
    ("a +", "is not a formula"),
    ("", "is empty"),
    ("a; b", "is not a formula"),
])
def test_anything_but_arithmetic_over_the_graders_is_refused(formula: str, problem: str):
    with pytest.raises(FormulaError) as caught:
        parse_formula(formula, NAMES)
    assert problem in str(caught.value)


def test_the_formula_is_checked_when_the_grader_is_validated_naming_the_field():
    check = {"type": "string_check", "name": "a", "input": "x", "reference": "x", "operation": "eq"}
    with pytest.raises(GraderError, match=r"^grader.calculate_output: calls \"__import__\('os'\).getpid\""):
        validate_grader({"type": "multi", "name": "m", "graders": {"a": check},
                         "calculate_output": "__import__('os').getpid() + a"})


def test_arithmetic_that_fails_is_an_error_in_the_metadata_not_an_exception():
    check = {"type": "string_check", "name": "a", "input": "{{ sample.output_text }}", "reference": "yes",
             "operation": "eq"}
    result = run_grader({"type": "multi", "name": "m", "graders": {"a": check}, "calculate_output": "1 / a"},
                        sample="no")
    assert result["reward"] == 0.0 and result["sub_rewards"] == {"a": 0.0}
    assert result["metadata"]["errors"]["other_error"] is True
    assert "float division by zero" in result["metadata"]["error_messages"][0]


def test_a_huge_power_overflows_at_once_instead_of_building_an_integer():
    with pytest.raises(OverflowError):
        evaluate_formula(parse_formula("10 ^ 10 ^ 10", set()), {})
    assert math.isclose(evaluate_formula(parse_formula("2 ^ 10", set()), {}), 1024.0)
