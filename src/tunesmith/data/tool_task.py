"""tool-tasks: questions a model answers by calling tools, generated in code (in the spirit of Raven, a
model tuned to route a question to the right external tool for calculations and data retrieval).

The three tools are real and run here, so an evaluation can execute the calls a model makes:
`calculator` (arithmetic parsed with `ast`, never `eval`), `convert_units` (a fixed table) and
`company_lookup` (figures of invented companies). `run_tool` is the one entry point: it checks the
arguments against the tool's JSON schema and answers with the JSON text a tool message carries, an
`{"error": ...}` when the call cannot run (so a model sees why, as with a real tool).

`tool_tasks()` writes rows in OpenAI's fine-tuning chat format: system (on about half the rows),
user, assistant `tool_calls`, `tool` results (made by `run_tool`), ..., the assistant's final answer,
and `tools` (all three schemas). About 15% of rows need no tool (the assistant answers directly),
about a third need two rounds of calls or parallel calls. Each row also carries `answer` (the key
figures its final reply states, which an end-to-end score looks for) and `task` (the kind of question).
"""

from __future__ import annotations

import ast
import functools
import json
import math
import operator
import random
import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from typing import Any

# ------------------------------------------------------------------------------------------- tools


class ToolError(ValueError):
    """A call a tool cannot answer; `run_tool` hands the message back to the model as {"error": ...}."""


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
              ast.Pow: operator.pow}
_SIGNS = {ast.UAdd: operator.pos, ast.USub: operator.neg}
MAX_EXPRESSION_CHARS = 500
MAX_POWER_BITS = 100_000  # an integer power bigger than this (2 ** 100000) is refused, not computed for minutes


def calculate(expression: str) -> int | float:
    """The value of an arithmetic expression: numbers, + - * / ** and parentheses, as Python computes
    them. Names, calls, attributes and every other operator are refused, so nothing but arithmetic runs."""
    if not isinstance(expression, str) or not expression.strip():
        raise ToolError("calculator: the expression is empty; pass arithmetic such as '(12.5 + 3) * 4'")
    if len(expression) > MAX_EXPRESSION_CHARS:
        raise ToolError(f"calculator: the expression is {len(expression)} characters; keep it under {MAX_EXPRESSION_CHARS}")
    try:
        tree = ast.parse(expression.strip(), mode="eval")
    except SyntaxError as error:
        raise ToolError(f"calculator: {expression!r} is not an arithmetic expression ({error.msg})") from None
    value = _evaluate(tree.body, expression.strip())
    if isinstance(value, float) and not math.isfinite(value):
        raise ToolError(f"calculator: {expression!r} is too large to compute")
    return value


def _evaluate(node: ast.AST, expression: str) -> int | float:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        return node.value
    if isinstance(node, ast.UnaryOp) and type(node.op) in _SIGNS:
        return _SIGNS[type(node.op)](_evaluate(node.operand, expression))
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        left, right = _evaluate(node.left, expression), _evaluate(node.right, expression)
        if isinstance(node.op, ast.Pow) and isinstance(left, int) and isinstance(right, int) and right > 0 \
                and max(left.bit_length(), 1) * right > MAX_POWER_BITS:
            raise ToolError(f"calculator: {expression!r} is too large to compute")
        try:
            value = _OPERATORS[type(node.op)](left, right)
        except ZeroDivisionError:
            raise ToolError(f"calculator: {expression!r} divides by zero") from None
        except OverflowError:
            raise ToolError(f"calculator: {expression!r} is too large to compute") from None
        if isinstance(value, complex):  # (-8) ** 0.5
            raise ToolError(f"calculator: {expression!r} has no real value")
        return value
    part = ast.get_source_segment(expression, node) or type(node).__name__
    raise ToolError(f"calculator: {expression!r} contains {part!r}; only numbers, + - * / ** and parentheses are allowed")


# Linear units: (dimension, size in the dimension's base unit: metre, kilogram, litre), exact by definition.
_LINEAR_UNITS = {"km": ("length", 1000.0), "m": ("length", 1.0), "mi": ("length", 1609.344), "ft": ("length", 0.3048),
                 "kg": ("mass", 1.0), "lb": ("mass", 0.45359237), "l": ("volume", 1.0), "gal": ("volume", 3.785411784)}
UNITS = (*_LINEAR_UNITS, "C", "F")  # gal: the US gallon


def _dimension(unit: str) -> str:
    return "temperature" if unit in ("C", "F") else _LINEAR_UNITS[unit][0]


def convert_units(value: float, from_unit: str, to_unit: str) -> float:
    """`value` in `from_unit` expressed in `to_unit` (km, mi, m, ft; kg, lb; C, F; l, gal)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ToolError(f"convert_units: value must be a finite number, not {value!r}")
    for unit in (from_unit, to_unit):
        if unit not in UNITS:
            raise ToolError(f"convert_units: unknown unit {unit!r}; use one of {', '.join(UNITS)}")
    if _dimension(from_unit) != _dimension(to_unit):
        raise ToolError(f"convert_units: cannot convert {from_unit} ({_dimension(from_unit)}) "
                        f"to {to_unit} ({_dimension(to_unit)})")
    if from_unit == to_unit:
        return float(value)
    if from_unit == "C":
        return value * 9 / 5 + 32
    if from_unit == "F":
        return (value - 32) * 5 / 9
    return value * _LINEAR_UNITS[from_unit][1] / _LINEAR_UNITS[to_unit][1]


# Invented companies: revenue in million USD, employees, year founded, headquarters city.
COMPANIES: dict[str, dict[str, Any]] = {
    name: dict(zip(("revenue", "employees", "founded", "headquarters"), figures))
    for name, *figures in [
        ("Zentrix Robotics", 412.5, 1830, 1998, "Lyon"),
        ("Aldermoor Foods", 1287.3, 9420, 1952, "Leeds"),
        ("Quillfeather Software", 96.8, 410, 2011, "Tallinn"),
        ("Brightwater Logistics", 2310.4, 15200, 1979, "Rotterdam"),
        ("Korvane Energy", 5120.9, 7330, 1986, "Calgary"),
        ("Halvard Textiles", 188.2, 2640, 1921, "Porto"),
        ("Mirelle Pharma", 3475.6, 11850, 1964, "Basel"),
        ("Tessaline Mining", 842.1, 3910, 1948, "Perth"),
        ("Orbweaver Networks", 655.7, 2275, 2003, "Austin"),
        ("Pellucid Optics", 231.9, 1190, 1995, "Jena"),
        ("Duskfield Breweries", 74.3, 520, 1887, "Pilsen"),
        ("Saltmarsh Shipping", 1563.8, 4480, 1931, "Gdansk"),
        ("Vantorre Aerospace", 2894.2, 13070, 1972, "Toulouse"),
        ("Emberfinch Furniture", 129.6, 980, 1969, "Malmo"),
        ("Glasswing Analytics", 57.4, 265, 2016, "Dublin"),
        ("Northcairn Insurance", 1921.5, 6120, 1958, "Aberdeen"),
    ]
}
METRIC_UNITS = {"revenue": "million USD", "employees": "people", "founded": "year", "headquarters": ""}


def company_lookup(company: str, metric: str) -> dict[str, Any]:
    """One figure of one company (name matched ignoring case and extra spaces)."""
    wanted = " ".join(str(company).split()).casefold()
    found = next((name for name in COMPANIES if name.casefold() == wanted), None)
    if found is None:
        raise ToolError(f"company_lookup: no company named {company!r}; known companies: {', '.join(COMPANIES)}")
    if metric not in METRIC_UNITS:
        raise ToolError(f"company_lookup: unknown metric {metric!r}; use one of {', '.join(METRIC_UNITS)}")
    result = {"company": found, "metric": metric, "value": COMPANIES[found][metric]}
    return result | ({"unit": METRIC_UNITS[metric]} if METRIC_UNITS[metric] else {})


def _function(name: str, description: str, properties: dict[str, Any]) -> dict[str, Any]:
    parameters = {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}
    return {"type": "function", "function": {"name": name, "description": description, "parameters": parameters}}


TOOL_SCHEMAS: list[dict[str, Any]] = [
    _function("calculator", "Evaluate an arithmetic expression exactly (numbers, + - * / ** and parentheses).",
              {"expression": {"type": "string", "description": "the arithmetic, e.g. (12.5 + 3) * 4"}}),
    _function("convert_units", "Convert a value between units of length (km, mi, m, ft), mass (kg, lb), "
              "temperature (C, F) or volume (l, gal: US gallons).",
              {"value": {"type": "number", "description": "the amount to convert"},
               "from_unit": {"type": "string", "enum": list(UNITS), "description": "the unit of value"},
               "to_unit": {"type": "string", "enum": list(UNITS), "description": "the unit wanted"}}),
    _function("company_lookup", "Look up a company's figure: revenue (million USD), employees, founded (year) "
              "or headquarters (city).",
              {"company": {"type": "string", "description": "the company's name"},
               "metric": {"type": "string", "enum": list(METRIC_UNITS), "description": "the figure wanted"}}),
]
_TOOLS: dict[str, Callable[..., Any]] = {
    "calculator": lambda expression: {"result": _significant(calculate(expression))},
    "convert_units": lambda value, from_unit, to_unit: {"value": _significant(convert_units(value, from_unit, to_unit)),
                                                        "unit": to_unit},
    "company_lookup": company_lookup,
}
_SCHEMAS = {schema["function"]["name"]: schema["function"]["parameters"] for schema in TOOL_SCHEMAS}


def _significant(value: int | float) -> int | float:
    """Floats to 10 significant digits, as a calculator shows them (0.1 + 0.2 -> 0.3)."""
    return value if isinstance(value, int) else float(f"{value:.10g}")


def run_tool(name: str, arguments: str | Mapping[str, Any]) -> str:
    """Run one call: `arguments` as JSON text (as a model writes them) or an object. The result is the
    JSON text of the tool message; a call that cannot run gets {"error": "..."} naming the problem."""
    try:
        result = _call(name, arguments)
    except ToolError as error:
        return json.dumps({"error": str(error)})
    return json.dumps(result)


@functools.cache
def _validators() -> dict[str, Any]:
    """One validator per tool, its schema checked once (jsonschema.validate re-checks it on every call).
    Imported here, not at the top: the catalog imports this module, and every CLI start the catalog."""
    import jsonschema

    for parameters in _SCHEMAS.values():
        jsonschema.Draft202012Validator.check_schema(parameters)
    return {name: jsonschema.Draft202012Validator(parameters) for name, parameters in _SCHEMAS.items()}


def _call(name: str, arguments: str | Mapping[str, Any]) -> Any:
    if name not in _TOOLS:
        raise ToolError(f"there is no tool named {name!r}; the tools are {', '.join(_TOOLS)}")
    if isinstance(arguments, str):
        try:
            arguments = json.loads(arguments)
        except ValueError as error:
            raise ToolError(f"{name}: the arguments are not JSON ({error})") from None
    problem = next(_validators()[name].iter_errors(arguments), None)
    if problem is not None:
        raise ToolError(f"{name}: the arguments do not match the tool's schema ({problem.message})")
    return _TOOLS[name](**arguments)


# ---------------------------------------------------------------------------------------- figures

_NUMBER = re.compile(r"(?<![\w.])-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:[eE][-+]?\d+)?")


def format_figure(value: float) -> str:
    """A number as a final answer states it: at most two decimals, no trailing zeros."""
    rounded = round(float(value), 2)
    return str(int(rounded)) if rounded.is_integer() else f"{rounded:.2f}".rstrip("0")


def mentions(text: str, figure: str) -> bool:
    """Whether `text` states `figure`. A number matches any number in the text once that is rounded
    (half up) to the figure's decimals (26.408 states 26.41, 1,788 states 1788); other figures match as
    whole words, ignoring case ("lyon" states Lyon, "Thelma" does not state "he")."""
    text, figure = text.replace("\u2212", "-"), figure.strip().replace("\u2212", "-")
    if _NUMBER.fullmatch(figure):
        wanted = Decimal(figure.replace(",", ""))
        return any(_rounds_to(found, wanted) for found in _NUMBER.findall(text))
    return re.search(rf"(?<!\w){re.escape(figure)}(?!\w)", text, re.IGNORECASE) is not None


def _rounds_to(found: str, wanted: Decimal) -> bool:
    try:
        return Decimal(found.replace(",", "")).quantize(wanted, ROUND_HALF_UP) == wanted
    except InvalidOperation:  # a number too long to round at that precision is not the figure
        return False


# -------------------------------------------------------------------------------------- the task

TRAIN_ROWS, TEST_ROWS = 600, 150
SYSTEM_PROMPT = ("You can call tools: calculator for arithmetic, convert_units for unit conversions and "
                 "company_lookup for company figures. Use a tool whenever an answer needs a calculation, a "
                 "conversion or a company's figure; answer other questions directly.")
Call = tuple[str, dict[str, Any]]


@dataclass(frozen=True)
class _Draft:
    """One question before it becomes a row: its rounds of calls and the final answer."""

    task: str
    question: str
    rounds: tuple[tuple[Call, ...], ...]
    final: str
    answer: tuple[str, ...]


def tool_tasks(seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """The train and test rows (600 and 150), the same for the same seed; no question is in both."""
    rng = random.Random(f"tunesmith-tool-tasks-{seed}")
    asked: set[str] = set()
    return {split: _split_rows(split, count, rng, asked) for split, count in (("train", TRAIN_ROWS), ("test", TEST_ROWS))}


def _split_rows(split: str, count: int, rng: random.Random, asked: set[str]) -> list[dict[str, Any]]:
    tasks = [task for task, number in _task_counts(count).items() for _ in range(number)]
    rng.shuffle(tasks)
    rows = []
    for task in tasks:
        for _ in range(2000):
            draft = _BUILDERS[task](rng, split)
            if draft.question not in asked and not any(mentions(draft.question, figure) for figure in draft.answer):
                break
        else:
            raise RuntimeError(f"tool-tasks: ran out of new {task} questions for {split}; add templates")
        asked.add(draft.question)
        rows.append(_row(draft, rng))
    return rows


def _task_counts(count: int) -> dict[str, int]:
    """Rows per task, as near each share as whole rows allow (largest remainders)."""
    exact = {task: share * count for task, share in TASK_SHARES.items()}
    counts = {task: int(value) for task, value in exact.items()}
    by_remainder = sorted(exact, key=lambda task: exact[task] - counts[task], reverse=True)
    for task in by_remainder[:count - sum(counts.values())]:
        counts[task] += 1
    return counts


def _row(draft: _Draft, rng: random.Random) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}] if rng.random() < 0.5 else []
    messages.append({"role": "user", "content": draft.question})
    for calls in draft.rounds:
        tool_calls = [{"id": "call_" + "".join(rng.choices(string.ascii_letters + string.digits, k=12)),
                       "type": "function", "function": {"name": name, "arguments": json.dumps(arguments)}}
                      for name, arguments in calls]
        messages.append({"role": "assistant", "tool_calls": tool_calls})
        messages += [{"role": "tool", "tool_call_id": call["id"],
                      "content": run_tool(call["function"]["name"], call["function"]["arguments"])}
                     for call in tool_calls]
    messages.append({"role": "assistant", "content": draft.final})
    return {"messages": messages, "tools": TOOL_SCHEMAS, "answer": list(draft.answer), "task": draft.task}


def _result(name: str, arguments: dict[str, Any]) -> Any:
    """What the tool answers, as the row's tool message will hold it."""
    return json.loads(run_tool(name, arguments))


# --------------------------------------------------------------------------- questions without tools

_CAPITALS = [("France", "Paris"), ("Japan", "Tokyo"), ("Italy", "Rome"), ("Spain", "Madrid"), ("Germany", "Berlin"),
             ("Canada", "Ottawa"), ("Australia", "Canberra"), ("Egypt", "Cairo"), ("Kenya", "Nairobi"),
             ("Peru", "Lima"), ("Norway", "Oslo"), ("Portugal", "Lisbon"), ("Greece", "Athens"),
             ("Argentina", "Buenos Aires"), ("Thailand", "Bangkok"), ("Ireland", "Dublin"), ("Sweden", "Stockholm"),
             ("Poland", "Warsaw"), ("Chile", "Santiago"), ("Vietnam", "Hanoi")]
_AUTHORS = [("Pride and Prejudice", "Austen"), ("Hamlet", "Shakespeare"), ("War and Peace", "Tolstoy"),
            ("Don Quixote", "Cervantes"), ("The Odyssey", "Homer"), ("Moby-Dick", "Melville"),
            ("Frankenstein", "Shelley"), ("Great Expectations", "Dickens"), ("The Divine Comedy", "Dante"),
            ("Madame Bovary", "Flaubert"), ("Crime and Punishment", "Dostoevsky"), ("Ulysses", "Joyce"),
            ("The Trial", "Kafka"), ("One Hundred Years of Solitude", "Garcia Marquez")]
_PLAIN_FACTS: list[tuple[tuple[str, ...], str, str]] = [
    *[((f"What is the capital of {country}?", f"Which city is the capital of {country}?",
        f"Name the capital city of {country}.", f"What's the capital city of {country}?"),
       city, f"The capital of {country} is {city}.") for country, city in _CAPITALS],
    *[((f"Who wrote {book}?", f"Which author wrote {book}?", f"Who is the author of {book}?",
        f"{book} was written by whom?"), author, f"{book} was written by {author}.") for book, author in _AUTHORS],
    (("How many sides does a hexagon have?", "A hexagon has how many sides?", "How many edges does a hexagon have?"),
     "6", "A hexagon has 6 sides."),
    (("How many days are in a leap year?", "How many days does a leap year have?", "A leap year has how many days?"),
     "366", "A leap year has 366 days."),
    (("How many continents are there?", "How many continents does the Earth have?", "What is the number of continents on Earth?"),
     "7", "There are 7 continents."),
    (("How many players does a football (soccer) team have on the field?", "How many players are on a soccer "
      "team's side during a match?", "A soccer team fields how many players?"), "11",
     "A football team has 11 players on the field."),
    (("Which planet is the largest in the solar system?", "What is the biggest planet in our solar system?",
      "Name the largest planet of the solar system."), "Jupiter", "The largest planet is Jupiter."),
    (("Which planet is closest to the Sun?", "What is the innermost planet of the solar system?",
      "Name the planet nearest the Sun."), "Mercury", "The planet closest to the Sun is Mercury."),
]


def _no_tool(rng: random.Random, split: str) -> _Draft:
    """A question answered directly; every fourth fact is kept for the test split."""
    facts = [fact for number, fact in enumerate(_PLAIN_FACTS) if (number % 4 == 3) == (split == "test")]
    questions, answer, final = rng.choice(facts)
    return _Draft("no_tool", rng.choice(questions), (), final, (answer,))


# ---------------------------------------------------------------------------- questions with one call

def _operand(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.6:
        return str(rng.randint(2, 999))
    if roll < 0.9:
        return f"{rng.uniform(1, 500):.{rng.choice((1, 2))}f}"
    return f"{rng.randint(2, 20)} ** {rng.choice((2, 3))}"


def _expression(rng: random.Random, depth: int = 0) -> str:
    """Two to four operands under + - * /, with parentheses around inner operations."""
    if depth == 2 or (depth == 1 and rng.random() < 0.5):
        return _operand(rng)
    text = f"{_expression(rng, depth + 1)} {rng.choice('+-*/')} {_expression(rng, depth + 1)}"
    return f"({text})" if depth else text


def _calculation(rng: random.Random, split: str) -> _Draft:
    while True:
        expression = _expression(rng)
        try:
            value = calculate(expression)
        except ToolError:  # a division by zero
            continue
        if 1 <= abs(value) < 1e9:
            break
    figure = format_figure(_result("calculator", {"expression": expression})["result"])
    question = rng.choice(["What is {e}?", "Calculate {e}.", "Can you work out {e} for me?", "Please compute {e}.",
                           "I need the value of {e}.", "How much is {e}?"]).format(e=expression)
    final = rng.choice(["{e} = {f}.", "The result is {f}.", "That comes to {f}."]).format(e=expression, f=figure)
    return _Draft("calculator", question, ((("calculator", {"expression": expression}),),), final, (figure,))


_UNIT_WORDS = {"km": ("km", "kilometres", "kilometers"), "mi": ("miles", "mi"), "m": ("metres", "meters", "m"),
               "ft": ("feet", "ft"), "kg": ("kg", "kilograms"), "lb": ("pounds", "lb"), "C": ("°C", "degrees Celsius"),
               "F": ("°F", "degrees Fahrenheit"), "l": ("litres", "liters"), "gal": ("US gallons", "gallons")}
_UNIT_PAIRS = [(a, b) for a in UNITS for b in UNITS if a != b and _dimension(a) == _dimension(b)]
_CONVERSION_QUESTIONS = ["How many {t} is {v} {u}?", "Convert {v} {u} to {t}.", "What is {v} {u} in {t}?",
                         "{v} {u} is how many {t}?", "Please express {v} {u} in {t}."]


def _amount(rng: random.Random, unit: str) -> int | float:
    if unit == "C":
        return rng.randint(-30, 45)
    if unit == "F":
        return rng.randint(-10, 110)
    if rng.random() < 0.6:
        return rng.randint(1, 500)
    value = round(rng.uniform(1, 500), 1)
    return int(value) if value.is_integer() else value  # 269, not 269.0


def _conversion(rng: random.Random, pairs: list[tuple[str, str]] | None = None) -> tuple[Call, str, str, str, str]:
    """A conversion worth asking about: (call, value text, from word, to word, figure of the answer)."""
    while True:
        from_unit, to_unit = rng.choice(pairs or _UNIT_PAIRS)
        value = _amount(rng, from_unit)
        converted = _result("convert_units", {"value": value, "from_unit": from_unit, "to_unit": to_unit})["value"]
        if abs(converted) >= 0.1:
            break
    call = ("convert_units", {"value": value, "from_unit": from_unit, "to_unit": to_unit})
    return call, str(value), rng.choice(_UNIT_WORDS[from_unit]), rng.choice(_UNIT_WORDS[to_unit]), format_figure(converted)


def _unit_conversion(rng: random.Random, split: str) -> _Draft:
    call, value, from_word, to_word, figure = _conversion(rng)
    question = rng.choice(_CONVERSION_QUESTIONS).format(v=value, u=from_word, t=to_word)
    return _Draft("convert_units", question, ((call,),), f"{value} {from_word} is {figure} {to_word}.", (figure,))


_LOOKUP_QUESTIONS = {
    "revenue": ["What is {c}'s annual revenue?", "How much revenue does {c} make in a year?",
                "Look up the revenue of {c}.", "What are {c}'s yearly sales?", "How big is {c}'s revenue?"],
    "employees": ["How many employees does {c} have?", "What is the headcount at {c}?", "How many people work at {c}?"],
    "founded": ["When was {c} founded?", "In what year was {c} established?", "What year did {c} start?"],
    "headquarters": ["Where is {c} headquartered?", "In which city is {c} based?", "What city are {c}'s headquarters in?"],
}
_LOOKUP_ANSWERS = {"revenue": "{c}'s annual revenue is {v} million USD.", "employees": "{c} has {v} employees.",
                   "founded": "{c} was founded in {v}.", "headquarters": "{c} is headquartered in {v}."}


def _lookup(rng: random.Random, split: str) -> _Draft:
    company, metric = rng.choice(list(COMPANIES)), rng.choice(list(METRIC_UNITS))
    value = _result("company_lookup", {"company": company, "metric": metric})["value"]
    figure = str(value)
    question = rng.choice(_LOOKUP_QUESTIONS[metric]).format(c=company)
    final = _LOOKUP_ANSWERS[metric].format(c=company, v=figure)
    return _Draft("company_lookup", question, ((("company_lookup", {"company": company, "metric": metric}),),),
                  final, (figure,))


# ------------------------------------------------------------------------ questions with several calls

def _two_companies(rng: random.Random, metric: str) -> tuple[tuple[Call, Call], Any, Any]:
    """Lookups of one metric for two companies, the larger figure first, and the two figures."""
    first, second = sorted(rng.sample(list(COMPANIES), 2), key=lambda name: -COMPANIES[name][metric])
    lookups = tuple(("company_lookup", {"company": name, "metric": metric}) for name in (first, second))
    return lookups, *(_result(*call)["value"] for call in lookups)


def _sum_or_difference(rng: random.Random, task: str) -> _Draft:
    metric, sign = ("revenue", "-") if task == "revenue_difference" else ("employees", "+")
    lookups, high, low = _two_companies(rng, metric)
    first, second = (call[1]["company"] for call in lookups)
    expression = f"{high} {sign} {low}"
    figure = format_figure(_result("calculator", {"expression": expression})["result"])
    if task == "revenue_difference":
        question = rng.choice(["How much more revenue does {a} make than {b}?", "By how much does {a}'s revenue "
                               "exceed {b}'s?", "What is the revenue gap between {a} and {b}?"])
        final = (f"{first}'s revenue ({high} million USD) exceeds {second}'s ({low} million USD) "
                 f"by {figure} million USD.")
    else:
        question = rng.choice(["How many employees do {a} and {b} have together?", "What is the combined "
                               "headcount of {a} and {b}?", "If {a} and {b} merged, how many people would work there?"])
        final = f"{first} ({high}) and {second} ({low}) have {figure} employees together."
    rounds = (lookups, (("calculator", {"expression": expression}),))
    return _Draft(task, question.format(a=first, b=second), rounds, final, (figure,))


def _revenue_difference(rng: random.Random, split: str) -> _Draft:
    return _sum_or_difference(rng, "revenue_difference")


def _combined_employees(rng: random.Random, split: str) -> _Draft:
    return _sum_or_difference(rng, "combined_employees")


def _revenue_per_employee(rng: random.Random, split: str) -> _Draft:
    company = rng.choice(list(COMPANIES))
    lookups = tuple(("company_lookup", {"company": company, "metric": metric}) for metric in ("revenue", "employees"))
    revenue, employees = (_result(*call)["value"] for call in lookups)
    expression = f"{revenue} * 1000 / {employees}"
    figure = format_figure(_result("calculator", {"expression": expression})["result"])
    question = rng.choice(["What is {c}'s revenue per employee, in thousands of USD?", "How much revenue does {c} "
                           "earn per employee (in thousand USD)?", "Work out {c}'s revenue per employee in thousands "
                           "of dollars.", "Revenue per employee at {c}? Give it in thousands of USD."])
    final = (f"{company} makes about {figure} thousand USD of revenue per employee "
             f"({revenue} million USD over {employees} employees).")
    return _Draft("revenue_per_employee", question.format(c=company), (lookups, (("calculator", {"expression": expression}),)),
                  final, (figure,))


def _two_conversions(rng: random.Random, split: str) -> _Draft:
    """Two conversions of different kinds, asked at once: two parallel calls."""
    first = _conversion(rng)
    first_dimension = _dimension(first[0][1]["from_unit"])
    second = _conversion(rng, [pair for pair in _UNIT_PAIRS if _dimension(pair[0]) != first_dimension])
    (call_1, v1, u1, t1, f1), (call_2, v2, u2, t2, f2) = first, second
    question = rng.choice(["Convert {v1} {u1} to {t1} and {v2} {u2} to {t2}.", "What is {v1} {u1} in {t1}, and "
                           "{v2} {u2} in {t2}?", "Two conversions, please: {v1} {u1} to {t1}, and {v2} {u2} to {t2}."])
    question = question.format(v1=v1, u1=u1, t1=t1, v2=v2, u2=u2, t2=t2)
    final = f"{v1} {u1} is {f1} {t1}, and {v2} {u2} is {f2} {t2}."
    return _Draft("two_conversions", question, ((call_1, call_2),), final, (f1, f2))


def _convert_then_add(rng: random.Random, split: str) -> _Draft:
    """Two amounts in different units added up: a conversion, then the calculator on its result."""
    linear = [pair for pair in _UNIT_PAIRS if _dimension(pair[0]) != "temperature"]
    call, v1, u1, u2, _ = _conversion(rng, linear)
    to_unit = call[1]["to_unit"]
    v2 = _amount(rng, to_unit)
    converted = _result(*call)["value"]
    expression = f"{json.dumps(converted)} + {v2}"
    figure = format_figure(_result("calculator", {"expression": expression})["result"])
    question = rng.choice(["What is {v1} {u1} plus {v2} {u2}, in {u2}?", "Add {v1} {u1} to {v2} {u2} and give the "
                           "total in {u2}.", "What do {v1} {u1} and {v2} {u2} come to in total, in {u2}?"])
    final = f"{v1} {u1} is {format_figure(converted)} {u2}, so the total is {figure} {u2}."
    return _Draft("convert_then_add", question.format(v1=v1, u1=u1, v2=v2, u2=u2),
                  ((call,), (("calculator", {"expression": expression}),)), final, (figure,))


_BUILDERS: dict[str, Callable[[random.Random, str], _Draft]] = {
    "no_tool": _no_tool, "calculator": _calculation, "convert_units": _unit_conversion, "company_lookup": _lookup,
    "revenue_difference": _revenue_difference, "combined_employees": _combined_employees,
    "revenue_per_employee": _revenue_per_employee, "two_conversions": _two_conversions,
    "convert_then_add": _convert_then_add,
}
TASK_SHARES = {"no_tool": 0.15, "calculator": 0.20, "convert_units": 0.18, "company_lookup": 0.15,
               "revenue_difference": 0.08, "combined_employees": 0.06, "revenue_per_employee": 0.05,
               "two_conversions": 0.07, "convert_then_add": 0.06}
