"""Graders are OpenAI's objects, field for field: what OpenAI's SDK types accept is accepted, and every
problem is named by its path, all at once."""

from __future__ import annotations

import pytest

from tunesmith.graders import GraderError, MultiGrader, validate_grader

STRING_CHECK = {"type": "string_check", "name": "exact", "input": "{{ sample.output_text }}",
                "reference": "{{ item.answer }}", "operation": "eq"}
TEXT_SIMILARITY = {"type": "text_similarity", "name": "similar", "input": "{{ sample.output_text }}",
                   "reference": "{{ item.summary }}", "evaluation_metric": "bleu"}
PYTHON = {"type": "python", "name": "code", "source": "def grade(sample, item):\n    return 1.0\n",
          "image_tag": "2025-05-08"}
SCORE_MODEL = {"type": "score_model", "name": "judge", "model": "gpt-4o-2024-08-06", "range": [0, 10],
               "sampling_params": {"temperature": 0, "max_completions_tokens": 100, "seed": 1, "top_p": 1.0,
                                   "reasoning_effort": "low"},
               "input": [{"role": "system", "content": "Grade from 0 to 10."},
                         {"role": "user", "type": "message", "content": [
                             {"type": "input_text", "text": "Answer: {{ sample.output_text }}"},
                             {"type": "output_text", "text": "Reference: {{ item.answer }}"}]}]}
LABEL_MODEL = {"type": "label_model", "name": "labeller", "model": "gpt-4o", "labels": ["right", "wrong"],
               "passing_labels": ["right"], "input": [{"role": "developer", "content": "{{ sample.output_text }}"}]}
MULTI = {"type": "multi", "name": "both", "graders": {"exact": STRING_CHECK, "similar": TEXT_SIMILARITY},
         "calculate_output": "0.5 * exact + 0.5 * similar"}
SDK_TYPES = {"string_check": "StringCheckGrader", "text_similarity": "TextSimilarityGrader",
             "python": "PythonGrader", "score_model": "ScoreModelGrader", "label_model": "LabelModelGrader"}


@pytest.mark.parametrize("raw", [STRING_CHECK, TEXT_SIMILARITY, PYTHON, SCORE_MODEL, LABEL_MODEL],
                         ids=lambda raw: raw["type"])
def test_a_grader_is_accepted_as_openais_sdk_types_accept_it_and_dumps_back_unchanged(raw: dict):
    import openai.types.graders as sdk

    getattr(sdk, SDK_TYPES[raw["type"]]).model_validate(raw)  # OpenAI's own reading of the same object
    grader = validate_grader(raw)
    assert grader.model_dump(exclude_none=True) == raw


def test_a_multi_grader_holds_its_graders_by_name_as_openais_guide_writes_it():
    # openai-python's MultiGrader types `graders` as a single grader; OpenAI's guide and API take an
    # object of named graders, which calculate_output refers to by name. The guide is what users send.
    grader = validate_grader(MULTI)
    assert isinstance(grader, MultiGrader) and set(grader.graders) == {"exact", "similar"}
    assert grader.model_dump(exclude_none=True) == MULTI


def problems(raw: dict) -> list[str]:
    with pytest.raises(GraderError) as caught:
        validate_grader(raw)
    return caught.value.problems


def test_a_bad_metric_in_a_multi_grader_is_named_by_its_path_with_the_close_choice():
    raw = {**MULTI, "graders": {"a": STRING_CHECK, "b": {**TEXT_SIMILARITY, "evaluation_metric": "bleu2"}},
           "calculate_output": "a + b"}
    assert problems(raw) == [
        "grader.graders.b.evaluation_metric: 'bleu2' is not one of cosine, fuzzy_match, bleu, gleu, meteor, "
        "rouge_1, rouge_2, rouge_3, rouge_4, rouge_5, rouge_l; did you mean 'bleu'?"]


def test_every_problem_is_reported_at_once():
    raw = {**MULTI, "graders": {
        "a": {**STRING_CHECK, "operaton": "eq", "operation": None},
        "b": {"type": "text_similarity", "name": "b", "input": 5, "evaluation_metric": "rouge"},
        "c": {"type": "string_chek"},
    }, "calculate_output": "a + b + c"}
    assert problems(raw) == [
        "grader.graders.a.operation: None is not one of eq, ne, like, ilike",
        "grader.graders.a.operaton: unknown field 'operaton' (not in OpenAI's grader schema); did you mean 'operation'?",
        "grader.graders.b.input: expected text, got 5",
        "grader.graders.b.reference: required",
        "grader.graders.b.evaluation_metric: 'rouge' is not one of cosine, fuzzy_match, bleu, gleu, meteor, rouge_1, "
        "rouge_2, rouge_3, rouge_4, rouge_5, rouge_l; did you mean 'rouge_l'?",
        "grader.graders.c.type: 'string_chek' is not one of string_check, text_similarity, python, score_model, "
        "label_model; did you mean 'string_check'?",
    ]


def test_a_message_part_is_named_inside_its_list_and_a_number_is_not_text():
    raw = {**SCORE_MODEL, "range": ["0", 10], "input": [
        {"role": "usr", "content": [{"type": "input_text", "txt": "x"}, 5]}]}
    assert problems(raw) == [
        "grader.input[0].role: 'usr' is not one of user, assistant, system, developer; did you mean 'user'?",
        "grader.input[0].content[0].text: required",
        "grader.input[0].content[0].txt: unknown field 'txt' (not in OpenAI's grader schema); did you mean 'text'?",
        "grader.input[0].content[1]: expected text, a content part object such as {\"type\": \"input_text\", "
        "\"text\": ...}, or a list of them; got 5",
        "grader.range[0]: expected a number, got '0'",
    ]


@pytest.mark.parametrize(("template", "problem"), [
    ("{{ foo.answer }}", "names 'foo'; the namespaces are item (the data row) and sample"),
    ("{{ item..answer }}", "is not {{ namespace.field }}"),
    ("{{ item.answer + 1 }}", "is not {{ namespace.field }}"),
])
def test_a_template_outside_openais_syntax_is_refused_when_the_grader_is_checked(template: str, problem: str):
    (found,) = problems({**STRING_CHECK, "reference": f"Reference: {template}"})
    assert found.startswith("grader.reference: template") and problem in found


def test_templates_in_message_text_are_checked_too():
    raw = {**LABEL_MODEL, "input": [{"role": "user", "content": ["fine {{ item.x }}", "{{ items.x }}"]}]}
    (found,) = problems(raw)
    assert found.startswith("grader.input[0].content[1]: template '{{ items.x }}' names 'items'")


@pytest.mark.parametrize(("source", "problem"), [
    ("def grade(sample, item)\n    return 1", "is not valid Python (line 1:"),
    ("def score(sample, item):\n    return 1", "defines no grade(sample, item)"),
    ("def grade(sample, item):\n    return 1\n" + "#" * (256 * 1024), "OpenAI's limit is 256 kB"),
])
def test_python_source_is_parsed_not_run_and_must_define_grade(source: str, problem: str):
    (found,) = problems({**PYTHON, "source": source})
    assert found.startswith("grader.source: ") and problem in found


def test_a_grade_bound_by_import_or_assignment_counts():
    validate_grader({**PYTHON, "source": "from json import loads as grade"})
    validate_grader({**PYTHON, "source": "grade = lambda sample, item: 1.0"})


def test_passing_labels_must_be_labels_and_labels_distinct():
    assert problems({**LABEL_MODEL, "labels": ["right", "wrong", "right"]}) == [
        "grader.labels: lists 'right' more than once; give each label once"]
    assert problems({**LABEL_MODEL, "passing_labels": ["right", "correct"]}) == [
        "grader.passing_labels: 'correct' not in labels; passing_labels must be a subset of labels"]


def test_a_score_range_is_two_ordered_numbers():
    assert problems({**SCORE_MODEL, "range": [1, 0]}) == [
        "grader.range: must be two numbers [lowest, highest] with lowest < highest"]


@pytest.mark.parametrize(("graders", "formula", "problem"), [
    ({"a": MULTI}, "a", "grader.graders.a.type: a multi grader cannot hold another multi grader"),
    ({"label-checker": STRING_CHECK}, "1", "grader.graders: 'label-checker' cannot be used in calculate_output"),
    ({"max": STRING_CHECK}, "max", "grader.graders: 'max' is a function of calculate_output"),
    ({"a": STRING_CHECK}, "a + b", "grader.calculate_output: 'b' names no grader (the graders: a)"),
    ({}, "1", "grader.graders: expected an object of named graders"),
])
def test_a_multi_graders_names_and_formula_are_checked(graders: dict, formula: str, problem: str):
    found = problems({**MULTI, "graders": graders, "calculate_output": formula})
    assert any(line.startswith(problem) for line in found), found


def test_not_a_grader_at_all():
    assert problems([1, 2]) == ["grader: expected a grader object such as {\"type\": \"string_check\", ...}, got [1, 2]"]
    assert problems({"name": "x"}) == [
        "grader.type: required; one of string_check, text_similarity, python, score_model, label_model, multi"]
