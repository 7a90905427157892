import pytest

from tunesmith.config import TaskConfig
from tunesmith.data.examples import Example, Message
from tunesmith.data.prompting import conversation, prompt_of
from tunesmith.data.tasks import build_label_task, check_labels
from tunesmith.errors import ConfigError

ROWS = [Example("f.jsonl", 1, "label", text="a gripping film", label="pos"),
        Example("f.jsonl", 2, "label", text="a dull film", label="neg")]


def test_a_prompt_template_may_ask_for_json_with_braces_of_its_own():
    template = 'Review {text} and answer as JSON like {"label": "<{labels}>"} (not {other}).'
    task = build_label_task(ROWS, TaskConfig(prompt_template=template))
    assert task.prompt("a gripping film") == 'Review a gripping film and answer as JSON like {"label": "<neg or pos>"} (not {other}).'
    chat = conversation(ROWS[0], "Answer in JSON.", task)
    assert chat.messages == (Message("system", "Answer in JSON."), Message("user", task.prompt("a gripping film")),
                             Message("assistant", "pos"))


def test_fields_are_filled_once_so_a_text_holding_a_field_name_stays_as_written():
    task = build_label_task(ROWS, TaskConfig(prompt_template="Labels: {labels}. Text: {text}"))
    assert task.prompt("{labels} and {text}") == "Labels: neg or pos. Text: {labels} and {text}"


def test_a_template_without_the_text_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"must contain \{text\}"):
        build_label_task(ROWS, TaskConfig(prompt_template="Classify: {labels}"))


def test_a_label_outside_the_task_is_a_problem_of_its_row_and_the_rest_keep_text_and_label():
    task = build_label_task(ROWS, TaskConfig(label_names={"pos": "positive", "neg": "negative"}))
    odd = Example("f.jsonl", 3, "label", text="meh", label="mixed")
    kept, problems = check_labels([*ROWS, odd], task)
    assert kept == ROWS and [p.where for p in problems] == ["f.jsonl:3"]
    asked = prompt_of(ROWS[0], "Be brief.", task)
    assert (asked.label, asked.reference, asked.key) == ("positive", "positive", "a gripping film")
    assert asked.messages == (Message("system", "Be brief."), Message("user", task.prompt("a gripping film")))
    unlabelled = prompt_of(Example("new.csv", 2, "text", text="a gripping film"), "Be brief.", task)
    assert unlabelled.messages == asked.messages and unlabelled.reference is None
