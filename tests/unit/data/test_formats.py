import pytest

from tunesmith.data.examples import Message
from tunesmith.data.formats import (
    FORMATS,
    choose_format,
    convert_records,
    detect_format,
    with_system_prompt,
)
from tunesmith.data.read import Record


def convert(rows: list[dict], fmt: str = "auto", columns: dict | None = None, system: str | None = None):
    records = [Record("f.jsonl", i + 1, row) for i, row in enumerate(rows)]
    examples, problems = convert_records(records, choose_format(records, fmt, columns), columns or {})
    return [with_system_prompt(e, system) for e in examples], problems


def roles(example) -> list[tuple[str, str]]:
    return [(m.role, m.content) for m in example.messages]


def test_openai_chat_with_content_parts_and_weights():
    (example,), problems = convert([{"messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi "}, {"type": "text", "text": "there"}]},
        {"role": "assistant", "content": "Hello", "weight": 0},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello again"},
    ]}])
    assert not problems
    assert roles(example)[1] == ("user", "Hi there")
    assert [m.train for m in example.messages if m.role == "assistant"] == [False, True]


def test_alpaca_joins_instruction_and_input_and_keeps_history_and_system():
    (example,), problems = convert([{
        "instruction": "Add the numbers.", "input": "2 and 3", "output": "5", "system": "You do maths.",
        "history": [["Hi", "Hello!"]],
    }])
    assert not problems
    assert roles(example) == [("system", "You do maths."), ("user", "Hi"), ("assistant", "Hello!"),
                              ("user", "Add the numbers.\n\n2 and 3"), ("assistant", "5")]


def test_sharegpt_maps_speakers_and_top_level_system():
    (example,), problems = convert([{"system": "S", "conversations": [
        {"from": "human", "value": "Q"}, {"from": "gpt", "value": "A"}]}])
    assert not problems
    assert roles(example) == [("system", "S"), ("user", "Q"), ("assistant", "A")]


def test_prompt_completion_plain_and_conversational():
    examples, problems = convert([
        {"prompt": "2+2=", "completion": " 4"},
        {"prompt": [{"role": "user", "content": "2+2?"}], "completion": [{"role": "assistant", "content": "4"}]},
    ])
    assert not problems
    assert examples[0].kind == "completion" and examples[0].completion == " 4"
    assert examples[1].kind == "chat" and roles(examples[1]) == [("user", "2+2?"), ("assistant", "4")]


def test_text_rows_label_rows_and_detection_order():
    (example,), _ = convert([{"text": "A document."}])
    assert example.kind == "text"
    labelled, problems = convert([{"text": "great film", "label": "positive"}, {"text": "dull", "label": -1.0}])
    assert not problems and [(e.kind, e.label) for e in labelled] == [("label", "positive"), ("label", "-1")]
    assert detect_format({"text": "x", "label": 1}) == "label"
    assert detect_format({"messages": [], "text": "x"}) == "chat"
    assert detect_format({"instruction": "a", "output": "b"}) == "alpaca"
    assert detect_format({"question": "a"}) is None
    assert set(FORMATS) >= {"chat", "alpaca", "sharegpt", "prompt_completion", "text"}


def test_column_mapping_renames_user_columns():
    (example,), problems = convert([{"question": "Capital of France?", "answer": "Paris"}],
                                   "prompt_completion", {"prompt": "question", "completion": "answer"})
    assert not problems and example.prompt == "Capital of France?" and example.completion == "Paris"
    _, problems = convert([{"q": "x", "answer": "y"}], "prompt_completion", {"prompt": "question", "completion": "answer"})
    assert "column 'question' (mapped to 'prompt' by data.columns) is missing" in str(problems[0])


def test_system_prompt_is_added_only_where_missing():
    examples, _ = convert([
        {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
        {"messages": [{"role": "system", "content": "own"}, {"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
    ], system="default system")
    assert examples[0].messages[0] == Message("system", "default system")
    assert examples[1].messages[0].content == "own"


U = {"role": "user", "content": "question"}
A = {"role": "assistant", "content": "answer"}


def test_a_chat_row_ending_with_a_user_turn_is_a_prompt_row_with_its_fields():
    """OpenAI's reinforcement rows: the conversation so far, and the fields a grader reads."""
    row = {"messages": [U, A, U], "reference_answer": "42", "meta": {"level": 2}}
    examples, problems = convert([row])
    assert not problems
    assert examples[0].kind == "prompt"
    assert [m.role for m in examples[0].messages] == ["user", "assistant", "user"]
    assert examples[0].fields == row


@pytest.mark.parametrize(("row", "message"), [
    ({"messages": [U, U, A]}, "message 2 is 'user' after 'user'"),
    ({"messages": [A]}, "message 1 is 'assistant' after the start"),
    ({"messages": [U, {"role": "assistant", "content": "  "}]}, "message 2 is an empty assistant turn"),
    ({"messages": [U, {"role": "bot", "content": "x"}]}, "message 2 has role 'bot'"),
    ({"messages": [U, {"role": "assistant"}]}, "message 2 has no 'content'"),
    ({"messages": [U, A, {"role": "system", "content": "late"}, U, A]}, "system message after the conversation started"),
    ({"messages": [U, {"role": "assistant", "content": 5}]}, "content is a int, not text"),
    ({"messages": [U, {"role": "tool", "content": "x"}]}, "tool call"),
    ({"messages": []}, "non-empty list"),
    ({"messages": [U, {"role": "assistant", "content": "a", "weight": 0}]}, "every assistant reply has weight 0"),
    ({"instruction": "do", "output": ""}, "'output' is empty"),
    ({"instruction": 3, "output": "x"}, "'instruction' is a int"),
    ({"conversations": [{"from": "alien", "value": "x"}]}, "not a known speaker"),
    ({"prompt": "p", "completion": ""}, "'completion' is empty"),
    ({"text": ""}, "'text' is empty"),
    ({"text": "fine", "label": ""}, "'label' is ''"),
    ({"text": " ", "label": "pos"}, "'text' is empty or not text"),
    ({"foo": 1, "bar": 2}, "no known fields (the row has fields foo, bar)"),
])
def test_each_row_problem_is_named_with_its_fix(row, message):
    examples, problems = convert([row])
    assert not examples
    assert problems and message in str(problems[0]), problems
    assert str(problems[0]).startswith("f.jsonl:1: ")
    assert "; " in str(problems[0])  # what is wrong; what to do


def test_rows_of_another_format_than_the_file_are_reported_as_missing_fields():
    rows = [{"messages": [U, A]}] * 3 + [{"instruction": "x", "output": "y"}]
    examples, problems = convert(rows)
    assert len(examples) == 3
    assert "f.jsonl:4: missing field 'messages' for chat rows" in str(problems[0])


def test_every_bad_row_is_reported_not_only_the_first():
    rows = [{"messages": [U, A]}, {"messages": [U, U]}, {"messages": [A]}, {"messages": [U, A]}, {"nothing": 1}]
    examples, problems = convert(rows)
    assert len(examples) == 2
    assert [p.where for p in problems] == ["f.jsonl:2", "f.jsonl:3", "f.jsonl:5"]


def test_format_detection_sees_the_mapped_columns():
    rows = [{"review": "good", "verdict": "positive", "id": 1}]
    examples, problems = convert(rows, columns={"text": "review", "label": "verdict"})
    assert not problems and examples[0].kind == "label" and examples[0].text == "good"


def test_a_problem_shared_by_many_rows_is_shown_a_few_times_then_its_lines_listed():
    from tunesmith.errors import DataError

    rows = [{"question": "q", "answer": "a"}] * 30 + [{"messages": [U, U]}]
    _, problems = convert(rows, fmt="chat")
    report = DataError("summary:", problems).report()
    assert report.count("missing field 'messages'") == 3
    assert "the same problem in 27 more rows (lines 4, 5, 6," in report
    assert "f.jsonl:31: message 2 is 'user' after 'user'" in report
