"""word-problems: arithmetic word problems with a whole-number answer, generated in code, for
reinforcement fine-tuning with a verifiable reward (a grader compares the reply with the row's
`answer`).

Each problem takes one step (half of them) or two (+, -, x, exact division) over small numbers, in
one of fourteen templates with names, objects and numbers drawn from a seeded generator. The user is asked for the
number alone, so a reply is right only when it is exactly the answer: what a model must learn is the
arithmetic and the format together.

Parts: `train` and `test` are OpenAI's reinforcement rows (`messages` ending with the user's turn, and
`answer`), no problem text in both; `sft` is the train prompts with the answer as the assistant's
reply (a supervised baseline on the same prompts); every row also carries `solution` (the steps) and
`template` (which template made it).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

INSTRUCTION = "Reply with the number only."
NAMES = ["Maya", "Omar", "Lena", "Kofi", "Priya", "Tomas", "Aiko", "Sven", "Nadia", "Diego", "Mei", "Arjun"]
THINGS = ["pencils", "apples", "stickers", "marbles", "books", "stamps", "cookies", "shells", "cards", "coins"]

Problem = tuple[str, int, str]  # question, answer, solution


def _more(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(5, 60), r.randint(2, 40)
    return f"{name} has {a} {thing} and gets {b} more. How many {thing} does {name} have now?", a + b, f"{a} + {b} = {a + b}"


def _fewer(r: random.Random, name: str, thing: str) -> Problem:
    a = r.randint(10, 80)
    b = r.randint(1, a - 1)
    return f"{name} has {a} {thing} and gives {b} away. How many {thing} are left?", a - b, f"{a} - {b} = {a - b}"


def _buy_and_give(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(5, 40), r.randint(2, 30)
    c = r.randint(1, a + b - 1)
    return (f"{name} has {a} {thing}. {name} buys {b} more and then gives {c} to a friend. How many {thing} does "
            f"{name} have now?", a + b - c, f"{a} + {b} - {c} = {a + b - c}")


def _boxes(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(2, 12), r.randint(2, 12)
    return f"{name} packs {a} boxes with {b} {thing} in each box. How many {thing} are there in all?", a * b, f"{a} x {b} = {a * b}"


def _share(r: random.Random, name: str, thing: str) -> Problem:
    b, each = r.randint(2, 9), r.randint(2, 12)
    return (f"{name} shares {b * each} {thing} equally among {b} friends. How many {thing} does each friend get?",
            each, f"{b * each} / {b} = {each}")


def _boxes_and_extra(r: random.Random, name: str, thing: str) -> Problem:
    a, b, c = r.randint(2, 9), r.randint(2, 9), r.randint(1, 20)
    return (f"{name} has {a} bags of {b} {thing} and {c} loose {thing}. How many {thing} does {name} have?",
            a * b + c, f"{a} x {b} + {c} = {a * b + c}")


def _wages(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(5, 20), r.randint(2, 7)
    c = r.randint(1, a * b - 1)
    return (f"{name} earns {a} dollars a day for {b} days and spends {c} dollars. How many dollars does {name} have "
            "left?", a * b - c, f"{a} x {b} - {c} = {a * b - c}")


def _two_days(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(5, 40), r.randint(1, 15)
    return (f"{name} reads {a} pages on Monday and {b} more pages on Tuesday than on Monday. How many pages does "
            f"{name} read on the two days?", 2 * a + b, f"{a} + ({a} + {b}) = {2 * a + b}")


def _rows(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(2, 12), r.randint(2, 12)
    c = r.randint(1, a * b - 1)
    return (f"A garden has {a} rows of {b} plants. {c} plants die. How many plants are left?",
            a * b - c, f"{a} x {b} - {c} = {a * b - c}")


def _groups(r: random.Random, name: str, thing: str) -> Problem:
    per, groups = r.randint(2, 8), r.randint(2, 10)
    extra = r.randint(1, 15)
    total = per * groups + extra
    return (f"{name} has {total} {thing}, keeps {extra} and puts the rest into groups of {per}. How many groups "
            f"does {name} make?", groups, f"({total} - {extra}) / {per} = {groups}")


def _difference(r: random.Random, name: str, thing: str) -> Problem:
    other = r.choice([n for n in NAMES if n != name])
    a, b = r.randint(10, 60), r.randint(1, 9)
    return (f"{name} has {a} {thing}. {other} has {b} times as many. How many more {thing} does {other} have than "
            f"{name}?", a * b - a, f"{a} x {b} - {a} = {a * b - a}")


def _price(r: random.Random, name: str, thing: str) -> Problem:
    a, b, c = r.randint(2, 9), r.randint(2, 15), r.randint(1, 5)
    return (f"Each of the {thing} costs {b} dollars. {name} buys {a} of them and pays with {a * b + c} dollars. "
            "How many dollars of change does {name} get?".replace("{name}", name), c, f"{a * b + c} - {a} x {b} = {c}")


def _weeks(r: random.Random, name: str, thing: str) -> Problem:
    a, b = r.randint(2, 9), r.randint(1, 6)
    return (f"{name} collects {a} {thing} every day for {b} weeks. How many {thing} is that?", 7 * a * b,
            f"{a} x 7 x {b} = {7 * a * b}")


def _halves(r: random.Random, name: str, thing: str) -> Problem:
    a, b = 2 * r.randint(5, 40), r.randint(1, 20)
    return (f"{name} has {a} {thing}, gives half of them away and then finds {b} more. How many {thing} does "
            f"{name} have now?", a // 2 + b, f"{a} / 2 + {b} = {a // 2 + b}")


# One step (+, -, x, /) and two steps. A model of 0.5B answering with the number alone, no working,
# gets most one-step problems and few two-step ones (Qwen2.5-Coder-0.5B-Instruct, greedy: 0.80 on
# `boxes`, 0.27 on `share`, 0.00-0.07 on each two-step template): one-step problems are half the rows,
# so a policy has right answers to learn from and room to learn the harder ones.
ONE_STEP: dict[str, Callable[[random.Random, str, str], Problem]] = {
    "more": _more, "fewer": _fewer, "boxes": _boxes, "share": _share,
}
TWO_STEPS: dict[str, Callable[[random.Random, str, str], Problem]] = {
    "buy_and_give": _buy_and_give, "boxes_and_extra": _boxes_and_extra, "wages": _wages, "two_days": _two_days,
    "rows": _rows, "groups": _groups, "difference": _difference, "price": _price, "weeks": _weeks, "halves": _halves,
}
TEMPLATES = {**ONE_STEP, **TWO_STEPS}


def word_problems(train: int = 800, test: int = 200, seed: int = 0) -> dict[str, list[dict[str, Any]]]:
    """{'train': rows, 'test': rows, 'sft': the train rows with their answers as replies}; no question twice."""
    r = random.Random(f"tunesmith-word-problems-{seed}")
    seen: set[str] = set()
    rows: list[dict[str, Any]] = []
    while len(rows) < train + test:
        group = ONE_STEP if len(rows) % 2 == 0 else TWO_STEPS
        names = list(group)
        template = names[(len(rows) // 2) % len(names)]
        question, answer, solution = TEMPLATES[template](r, r.choice(NAMES), r.choice(THINGS))
        if question in seen:
            continue
        seen.add(question)
        rows.append({"messages": [{"role": "user", "content": f"{question} {INSTRUCTION}"}], "answer": str(answer),
                     "solution": solution, "template": template})
    r.shuffle(rows)
    train_rows, test_rows = rows[:train], rows[train:]
    sft = [{**row, "messages": [*row["messages"], {"role": "assistant", "content": row["answer"]}]} for row in train_rows]
    return {"train": train_rows, "test": test_rows, "sft": sft}


# The grader examples/grpo.yaml trains with: OpenAI's string_check, the reply exactly the answer
EXACT_ANSWER = {"type": "string_check", "name": "exact_answer", "operation": "eq",
                "input": "{{ sample.output_text }}", "reference": "{{ item.answer }}"}
