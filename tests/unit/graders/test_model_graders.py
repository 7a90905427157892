"""score_model and label_model: what the model runner is asked, how its answer is read, and the local
runner on a real (tiny) model held to the answer's schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from tunesmith.graders import LocalModelRunner, ModelRefusal, run_grader

SCORE = {"type": "score_model", "name": "judge", "model": "gpt-4o-2024-08-06", "range": [0, 10],
         "sampling_params": {"temperature": 0.5, "max_completions_tokens": 64, "seed": 7},
         "input": [{"role": "developer", "content": "Grade the answer from 0 to 10."},
                   {"role": "user", "content": [{"type": "input_text", "text": "Question: {{ item.question }}"},
                                                "Answer: {{ sample.output_text }}"]}]}
LABEL = {"type": "label_model", "name": "labeller", "model": "gpt-4o", "labels": ["right", "wrong", "unsure"],
         "passing_labels": ["right"], "input": [{"role": "user", "content": "Is {{ sample.output_text }} right?"}]}
ITEM = {"question": "Capital of France?"}


class Recorder:
    """A model runner that answers with fixed text and keeps what it was asked."""

    def __init__(self, answer: object) -> None:
        self.answer, self.calls = answer, []

    def __call__(self, messages: list[dict], request: dict) -> object:
        self.calls.append((messages, request))
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


def raised(result: dict) -> dict:
    GraderRunResponse.model_validate(result)
    return {name: value for name, value in result["metadata"]["errors"].items() if value}


def test_the_runner_gets_chat_messages_with_templates_filled_and_the_rest_of_a_chat_request():
    runner = Recorder('{"steps": [], "result": 7}')
    run_grader(SCORE, sample="Paris", item=ITEM, model_runner=runner)
    ((messages, request),) = runner.calls
    assert messages == [
        {"role": "developer", "content": "Grade the answer from 0 to 10."},
        {"role": "user", "content": [{"type": "text", "text": "Question: Capital of France?"},
                                     {"type": "text", "text": "Answer: Paris"}]}]
    schema = request.pop("response_format")["json_schema"]["schema"]
    assert request == {"model": "gpt-4o-2024-08-06", "temperature": 0.5, "max_completion_tokens": 64, "seed": 7}
    assert schema["required"] == ["steps", "result"]
    assert schema["properties"]["result"] == {"type": "number", "minimum": 0.0, "maximum": 10.0}


@pytest.mark.parametrize(("answer", "reward", "scores"), [
    ('{"steps": [{"description": "d", "conclusion": "c"}], "result": 7}', 7.0,
     {"steps": [{"description": "d", "conclusion": "c"}], "result": 7}),
    ("8.5", 8.5, {"result": 8.5}),  # a bare number, from a runner that cannot hold a model to a schema
    ('{"steps": [], "result": 0}', 0.0, {"steps": [], "result": 0}),
])
def test_a_score_in_range_is_the_reward(answer: str, reward: float, scores: dict):
    result = run_grader(SCORE, sample="Paris", item=ITEM, model_runner=Recorder(answer))
    assert not raised(result) and result["reward"] == reward and result["metadata"]["scores"] == scores


@pytest.mark.parametrize(("answer", "message"), [
    ("11", "the grader model's score 11 is outside the range [0, 10]"),
    ('{"result": -1}', "the grader model's score -1 is outside the range [0, 10]"),
    ("Great answer!", "the grader model's answer has no score: 'Great answer!'"),
    ('{"result": true}', "the grader model's answer has no score: '{\"result\": true}'"),
    ('{"score": 5}', "the grader model's answer has no score: '{\"score\": 5}'"),
])
def test_an_answer_without_a_score_in_range_is_a_parse_error(answer: str, message: str):
    result = run_grader(SCORE, sample="Paris", item=ITEM, model_runner=Recorder(answer))
    assert raised(result) == {"model_grader_parse_error": True} and result["reward"] == 0.0
    assert result["metadata"]["error_messages"] == [message]


@pytest.mark.parametrize(("answer", "reward"), [
    ('{"steps": [], "result": "right"}', 1.0), ('{"steps": [], "result": "unsure"}', 0.0), ("wrong", 0.0),
    (" right\n", 1.0)])
def test_a_passing_label_scores_1_and_another_label_0(answer: str, reward: float):
    runner = Recorder(answer)
    result = run_grader(LABEL, sample="Paris", item={}, model_runner=runner)
    assert not raised(result) and result["reward"] == reward
    assert runner.calls[0][1]["response_format"]["json_schema"]["schema"]["properties"]["result"] == {
        "type": "string", "enum": ["right", "wrong", "unsure"]}


def test_a_label_not_in_labels_is_a_parse_error():
    result = run_grader(LABEL, sample="Paris", item={}, model_runner=Recorder('{"result": "maybe"}'))
    assert raised(result) == {"model_grader_parse_error": True}


@pytest.mark.parametrize(("answer", "errors"), [
    (ModelRefusal("I cannot grade this"), {"model_grader_refusal_error": True}),
    (ConnectionError("server down"), {"model_grader_server_error": True,
                                      "model_grader_server_error_details": "ConnectionError: server down"}),
    (None, {"model_grader_server_error": True,
            "model_grader_server_error_details": "the model runner returned NoneType, not the model's text"}),
])
def test_a_runner_that_fails_is_an_error_in_the_metadata(answer: object, errors: dict):
    assert raised(run_grader(SCORE, sample="Paris", item=ITEM, model_runner=Recorder(answer))) == errors


def test_a_missing_template_field_stops_before_the_model_is_asked():
    runner = Recorder("5")
    result = run_grader(SCORE, sample="Paris", item={}, model_runner=runner)
    assert raised(result) == {"invalid_variable_error": True} and runner.calls == []


def test_the_local_runner_reads_text_only_and_says_so_before_loading_anything():
    grader = {**LABEL, "input": [{"role": "user", "content": [
        {"type": "input_text", "text": "Is this right?"}, {"type": "input_image", "image_url": "https://x/y.png"}]}]}
    result = run_grader(grader, sample="x", item={}, model_runner=LocalModelRunner("no-such-model-is-loaded"))
    assert raised(result)["model_grader_server_error"] is True
    assert "the local grader model reads text only; this prompt has image_url parts" in (
        result["metadata"]["errors"]["model_grader_server_error_details"])


@pytest.fixture(scope="module")
def tiny_runner(tiny_model_dir: Path) -> LocalModelRunner:
    # no steps: a random 2-layer model would fill them up to the length limit before its result
    return LocalModelRunner(str(tiny_model_dir), device="cpu", max_steps=0)


def test_the_local_runner_holds_a_real_model_to_the_answer_schema(tiny_runner: LocalModelRunner):
    label = run_grader(LABEL, sample="Paris", item={}, model_runner=tiny_runner)
    assert not raised(label) and label["metadata"]["scores"]["steps"] == []
    assert label["metadata"]["scores"]["result"] in LABEL["labels"]
    assert label["reward"] == (1.0 if label["metadata"]["scores"]["result"] == "right" else 0.0)
    score = run_grader({**SCORE, "sampling_params": {"max_completions_tokens": 40}}, sample="Paris", item=ITEM,
                       model_runner=tiny_runner)
    assert not raised(score), score["metadata"].get("error_messages")
    assert 0 <= score["reward"] <= 10 and json.dumps(score["metadata"]["scores"]).startswith('{"steps": [], "result": ')
