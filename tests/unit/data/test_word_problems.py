"""word-problems: every answer is what its problem's arithmetic gives, no question is in both splits,
and the sft part is the train prompts with their answers as replies."""

from __future__ import annotations

import re

from tunesmith.data.word_problems import INSTRUCTION, TEMPLATES, word_problems


def _value(solution: str) -> int:
    """The left side of `solution` computed independently of the generator (x for *, / exact)."""
    expression = solution.split("=")[0].replace("x", "*")
    assert re.fullmatch(r"[\d\s+\-*/()]+", expression), solution
    value = eval(expression)  # noqa: S307 - digits and operators only, checked above
    assert value == int(value), solution
    return int(value)


def test_each_answer_is_its_problems_arithmetic_and_the_splits_share_no_question():
    parts = word_problems()
    assert (len(parts["train"]), len(parts["test"]), len(parts["sft"])) == (800, 200, 800)
    for row in parts["train"] + parts["test"]:
        question = row["messages"][0]["content"]
        assert question.endswith(INSTRUCTION) and row["template"] in TEMPLATES
        assert _value(row["solution"]) == int(row["answer"]) >= 0, row
        assert int(row["solution"].rsplit("=", 1)[1]) == int(row["answer"])
        numbers = re.findall(r"\d+", row["solution"].split("=")[0])
        assert all(n in question or n in ("2", "7") for n in numbers), row  # the numbers come from the question
    asked = {r["messages"][0]["content"] for r in parts["train"]}
    assert not asked & {r["messages"][0]["content"] for r in parts["test"]}
    assert len(asked) == 800
    assert all(s["messages"][:1] == t["messages"] and s["messages"][1] == {"role": "assistant", "content": t["answer"]}
               for s, t in zip(parts["sft"], parts["train"]))
    assert {r["template"] for r in parts["test"]} == set(TEMPLATES)
    assert word_problems() == parts  # seeded: the same rows everywhere
