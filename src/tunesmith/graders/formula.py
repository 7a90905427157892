"""A multi grader's `calculate_output`: arithmetic over the sub-graders' rewards, never Python.

OpenAI's operators (+ - * / and ^ for power) and functions (min, max, abs, floor, ceil, exp, sqrt,
log) over numbers and the sub-graders' names. The text is parsed with `ast` and walked by a small
evaluator that knows only those nodes: a name that is not a sub-grader, an attribute, a subscript,
a call to anything else, a string or a lambda is refused when the grader is validated, so the
formula can neither import nor reach any object.

`^` is power, as in OpenAI's formulas: it is read as Python's `**` before parsing, which also gives
it power's precedence (`2 * a ^ 2` is 2 * a**2), not that of Python's `^` (exclusive or).
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

FUNCTIONS: dict[str, tuple[Callable[..., float], int, int | None]] = {  # name -> (function, least, most arguments)
    "min": (min, 1, None), "max": (max, 1, None), "abs": (abs, 1, 1), "floor": (math.floor, 1, 1),
    "ceil": (math.ceil, 1, 1), "exp": (math.exp, 1, 1), "sqrt": (math.sqrt, 1, 1), "log": (math.log, 1, 2),
}
_BINARY = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}
_UNARY = {ast.UAdd: operator.pos, ast.USub: operator.neg}


class FormulaError(ValueError):
    """A formula that OpenAI's grammar does not allow, or that names an unknown grader."""


def parse_formula(formula: str, names: set[str]) -> ast.Expression:
    """The checked syntax tree of `formula`, whose variables are `names` (FormulaError otherwise)."""
    if not formula.strip():
        raise FormulaError("is empty; write a formula over the graders' names, such as (a + b) / 2")
    try:
        tree = ast.parse(formula.replace("^", "**"), mode="eval")
    except SyntaxError as error:
        raise FormulaError(f"{formula!r} is not a formula ({error.msg}); use + - * / ^, parentheses, numbers, "
                           "the graders' names and min, max, abs, floor, ceil, exp, sqrt, log") from None
    nodes = list(ast.walk(tree))
    called = {id(node.func) for node in nodes if isinstance(node, ast.Call)}
    for node in nodes:
        _check_node(node, names, called)
    return tree


def _check_node(node: ast.AST, names: set[str], called: set[int]) -> None:
    allowed = (ast.Expression, ast.BinOp, ast.UnaryOp, ast.Constant, ast.Name, ast.Call, ast.Load,
               *_BINARY, *_UNARY)
    if not isinstance(node, allowed):
        raise FormulaError(f"{type(node).__name__.lower()} {_source(node)!r} is not allowed; use + - * / ^, "
                           "parentheses, numbers, the graders' names and min, max, abs, floor, ceil, exp, sqrt, log")
    if isinstance(node, ast.Constant) and (isinstance(node.value, bool) or not isinstance(node.value, (int, float))):
        raise FormulaError(f"{node.value!r} is not a number")
    if isinstance(node, ast.Call):
        _check_call(node)
    elif isinstance(node, ast.Name) and node.id not in names and id(node) not in called:
        known = ", ".join(sorted(names)) or "none"
        raise FormulaError(f"{node.id!r} names no grader (the graders: {known})")


def _check_call(node: ast.Call) -> None:
    if not isinstance(node.func, ast.Name) or node.func.id not in FUNCTIONS:
        raise FormulaError(f"calls {_source(node.func)!r}; the functions are {', '.join(FUNCTIONS)}")
    if node.keywords or any(isinstance(argument, ast.Starred) for argument in node.args):
        raise FormulaError(f"{_source(node)!r}: give {node.func.id} plain arguments")
    _, least, most = FUNCTIONS[node.func.id]
    if len(node.args) < least or (most is not None and len(node.args) > most):
        wanted = f"{least}" if least == most else f"{least} or more" if most is None else f"{least} to {most}"
        raise FormulaError(f"{_source(node)!r}: {node.func.id} takes {wanted} argument(s)")


def _source(node: ast.AST) -> str:
    return ast.unparse(node)


def evaluate_formula(tree: ast.Expression, values: dict[str, float]) -> float:
    """The formula's value for the graders' rewards `values` (ArithmeticError or ValueError when the
    arithmetic fails: a division by zero, the log of a negative number). Every value is a float, so a
    power overflows at once instead of building a huge integer."""
    return _value(tree.body, values)


def _value(node: ast.AST, values: dict[str, float]) -> float:
    if isinstance(node, ast.Constant):
        return float(node.value)
    if isinstance(node, ast.Name):
        return float(values[node.id])
    if isinstance(node, ast.UnaryOp):
        return _UNARY[type(node.op)](_value(node.operand, values))
    if isinstance(node, ast.BinOp):
        return _BINARY[type(node.op)](_value(node.left, values), _value(node.right, values))
    if isinstance(node, ast.Call):
        return float(FUNCTIONS[node.func.id][0](*(_value(argument, values) for argument in node.args)))
    raise FormulaError(f"{_source(node)!r} is not allowed")  # unreachable for a tree from parse_formula
