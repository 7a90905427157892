"""run_grader answers in OpenAI's run response shape (checked with openai-python's own pydantic type),
templates fill from the item and the sample, and a batch's rewards are each sample's reward alone."""

from __future__ import annotations

import warnings

import pytest
from openai.types.fine_tuning.alpha import GraderRunResponse

from tunesmith.graders import GraderError, grade_many, run_grader

ERROR_FIELDS = {"formula_parse_error", "invalid_variable_error", "model_grader_parse_error",
                "model_grader_refusal_error", "model_grader_server_error", "model_grader_server_error_details",
                "other_error", "python_grader_runtime_error", "python_grader_runtime_error_details",
                "python_grader_server_error", "python_grader_server_error_type", "sample_parse_error",
                "truncated_observation_error", "unresponsive_reward_error"}


def check(operation: str, text: str = "{{ sample.output_text }}", reference: str = "{{ item.answer }}") -> dict:
    return {"type": "string_check", "name": f"check-{operation}", "input": text, "reference": reference,
            "operation": operation}


def checked_response(result: dict) -> GraderRunResponse:
    """The response as openai-python reads it, with nothing it lacks or drops."""
    response = GraderRunResponse.model_validate(result)
    assert set(result["metadata"]["errors"]) == ERROR_FIELDS  # MetadataErrors' fields, every one of them
    assert set(result) == {"reward", "metadata", "sub_rewards", "model_grader_token_usage_per_model"}
    return response


@pytest.mark.parametrize(("operation", "text", "reference", "reward"), [
    ("eq", "Paris", "Paris", 1.0), ("eq", "paris", "Paris", 0.0), ("eq", "Paris ", "Paris", 0.0),
    ("ne", "London", "Paris", 1.0), ("ne", "Paris", "Paris", 0.0),
    ("like", "It is Paris.", "Paris", 1.0), ("like", "It is paris.", "Paris", 0.0),
    ("ilike", "IT IS PARIS.", "paris", 1.0), ("ilike", "It is Rome.", "paris", 0.0),
])
def test_string_check_operations(operation: str, text: str, reference: str, reward: float):
    result = run_grader(check(operation), sample=text, item={"answer": reference})
    assert checked_response(result).reward == reward
    assert result["metadata"]["name"] == f"check-{operation}" and result["metadata"]["type"] == "string_check"
    assert "error_messages" not in result["metadata"] and not any(result["metadata"]["errors"].values())


def test_templates_reach_nested_fields_list_items_and_the_samples_json():
    grader = check("eq", text="{{ sample.output_json.city }}|{{ sample.output_json.tags[1] }}",
                   reference="{{ item.truth.city }}|{{ item.truth.tags.1 }}")
    result = run_grader(grader, sample='{"city": "Paris", "tags": ["a", "b"]}',
                        item={"truth": {"city": "Paris", "tags": ["x", "b"]}})
    assert result["reward"] == 1.0


def test_a_value_that_is_not_text_is_put_in_as_json():
    grader = check("eq", text="{{ item.count }} {{ item.flag }} {{ item.tags }} {{ item.none }}",
                   reference="3 true [\"a\", \"b\"] null")
    assert run_grader(grader, sample="", item={"count": 3, "flag": True, "tags": ["a", "b"], "none": None})["reward"] == 1.0


def test_a_sample_given_as_openais_fields_fills_output_tools_and_output_json():
    calls = [{"type": "function", "function": {"name": "lookup", "arguments": "{}"}}]
    grader = check("eq", text="{{ sample.output_tools[0].function.name }} {{ sample.output_json.answer }}",
                   reference="lookup 42")
    assert run_grader(grader, sample={"output_text": '{"answer": 42}', "output_tools": calls})["reward"] == 1.0


@pytest.mark.parametrize(("text", "sample", "item", "flag", "message"), [
    ("{{ item.answer }}", "Paris", {"question": "?"}, "invalid_variable_error",
     "{{ item.answer }}: item has no field 'answer' (its fields: question)"),
    ("{{ item.tags[3] }}", "Paris", {"tags": ["a"]}, "invalid_variable_error",
     "{{ item.tags[3] }}: item.tags is a list of 1, with no item 3"),
    ("{{ item.city.name }}", "Paris", {"city": "Paris"}, "invalid_variable_error",
     "{{ item.city.name }}: item.city is str, with no field 'name'"),
    ("{{ sample.output_json.city }}", "Paris, I think", {}, "sample_parse_error",
     "{{ sample.output_json.city }}: the sample's output is not valid JSON, so it has no output_json"),
    ("{{ sample.output_tools }}", "Paris", {}, "invalid_variable_error",
     "{{ sample.output_tools }}: sample has no field 'output_tools' (its fields: output_json, output_text)"),
])
def test_a_missing_field_is_an_error_in_the_metadata_not_a_crash(text: str, sample: str, item: dict, flag: str,
                                                                   message: str):
    result = run_grader(check("eq", text=text, reference="x"), sample=sample, item=item)
    checked_response(result)
    assert result["reward"] == 0.0
    assert [name for name, value in result["metadata"]["errors"].items() if value] == [flag]
    assert result["metadata"]["error_messages"] == [message]


def test_a_multi_grader_reports_sub_rewards_and_its_sub_graders_errors():
    grader = {"type": "multi", "name": "both", "calculate_output": "(exact + near) / 2", "graders": {
        "exact": check("eq"),
        "near": {"type": "text_similarity", "name": "near", "input": "{{ sample.output_text }}",
                 "reference": "{{ item.missing }}", "evaluation_metric": "fuzzy_match"}}}
    result = run_grader(grader, sample="Paris", item={"answer": "Paris"})
    response = checked_response(result)
    assert response.sub_rewards == {"exact": 1.0, "near": 0.0} and response.reward == 0.5
    assert response.metadata.errors.invalid_variable_error is True
    assert result["metadata"]["error_messages"] == [
        "near: {{ item.missing }}: item has no field 'missing' (its fields: answer)"]


def test_grade_many_gives_each_samples_own_reward_and_warns_once_for_those_that_failed():
    grader = {"type": "multi", "name": "both", "calculate_output": "max(exact, 0.5 * near)", "graders": {
        "exact": check("eq"),
        "near": {"type": "text_similarity", "name": "near", "input": "{{ sample.output_text }}",
                 "reference": "{{ item.answer }}", "evaluation_metric": "rouge_l"}}}
    samples = ["Paris", "paris is it", "London", "{}", "the answer is Paris"]
    items = [{"answer": "Paris"}, {"answer": "Paris"}, {"answer": "Paris"}, {"other": 1}, {"answer": "Paris"}]
    with pytest.warns(RuntimeWarning, match=r"grader 'both': 1 of 5 samples could not be graded and got reward 0; "
                                            r"the first: exact: \{\{ item.answer \}\}: item has no field 'answer'"):
        rewards = grade_many(grader, samples, items)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alone = [run_grader(grader, sample=s, item=i)["reward"] for s, i in zip(samples, items)]
    assert rewards == alone
    assert rewards[0] == 1.0 and rewards[2] == 0.0 and rewards[3] == 0.0 and 0 < rewards[4] < 1


def test_grade_many_needs_an_item_per_sample():
    with pytest.raises(GraderError, match="2 samples and 1 items; give one item per sample"):
        grade_many(check("eq"), ["a", "b"], [{"answer": "a"}])
