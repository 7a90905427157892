import pytest

from tunesmith.config import TaskConfig
from tunesmith.data.examples import Example
from tunesmith.data.tasks import build_label_task
from tunesmith.errors import ConfigError

ROWS = [Example("f.jsonl", 1, "label", text="a gripping film", label="pos"),
        Example("f.jsonl", 2, "label", text="a dull film", label="neg")]


def test_a_prompt_template_may_ask_for_json_with_braces_of_its_own():
    template = 'Review {text} and answer as JSON like {"label": "<{labels}>"} (not {other}).'
    task = build_label_task(ROWS, TaskConfig(prompt_template=template))
    assert task.prompt("a gripping film") == 'Review a gripping film and answer as JSON like {"label": "<neg or pos>"} (not {other}).'


def test_fields_are_filled_once_so_a_text_holding_a_field_name_stays_as_written():
    task = build_label_task(ROWS, TaskConfig(prompt_template="Labels: {labels}. Text: {text}"))
    assert task.prompt("{labels} and {text}") == "Labels: neg or pos. Text: {labels} and {text}"


def test_a_template_without_the_text_is_refused_with_the_fix():
    with pytest.raises(ConfigError, match=r"must contain \{text\}"):
        build_label_task(ROWS, TaskConfig(prompt_template="Classify: {labels}"))
