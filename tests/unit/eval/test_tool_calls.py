"""Tool-call metrics: hand-computed cases, the invariants every prediction keeps (order of parallel
calls never matters, exact match implies the right calls), intervals that agree with the shared
bootstrap, and the end-to-end loop that runs the calls a model makes for real."""

from __future__ import annotations

import json
import random

import pytest

from tunesmith.data.examples import Message, ToolCall
from tunesmith.data.tool_task import TOOL_SCHEMAS, run_tool, tool_tasks
from tunesmith.eval.intervals import mean_gain_interval
from tunesmith.eval.tool_calls import (
    TurnScore,
    argument_accuracy,
    arguments_exact_match,
    call_accuracy,
    reference_calls,
    reference_turns,
    schema_valid_share,
    score_turn,
    summarize,
    tool_call_intervals,
)
from tunesmith.eval.tool_loop import (
    end_to_end_intervals,
    reference_answer,
    run_row,
    run_rows,
    score_rows,
)


def lookup(company: str, metric: str = "revenue") -> tuple[str, str]:
    return "company_lookup", json.dumps({"company": company, "metric": metric})


def convert(value, from_unit="km", to_unit="mi") -> tuple[str, str]:
    return "convert_units", json.dumps({"value": value, "from_unit": from_unit, "to_unit": to_unit})


def test_parallel_calls_in_another_order_are_right():
    reference = [lookup("Zentrix Robotics"), lookup("Aldermoor Foods")]
    predicted = list(reversed(reference))
    assert call_accuracy(reference, predicted) == 1.0
    assert arguments_exact_match(reference, predicted) == 1.0
    assert argument_accuracy(reference, predicted) == 1.0
    assert schema_valid_share(predicted, TOOL_SCHEMAS) == 1.0


def test_arguments_compare_as_json_values_so_3_equals_3_point_0_but_not_the_string_3():
    reference = [convert(3)]
    assert arguments_exact_match(reference, [("convert_units", '{ "to_unit":"mi",  "value": 3.0, "from_unit": "km"}')]) == 1.0
    assert arguments_exact_match(reference, [convert(3.0)]) == 1.0
    assert arguments_exact_match(reference, [convert("3")]) == 0.0
    assert argument_accuracy(reference, [convert("3")]) == pytest.approx(2 / 3)
    assert schema_valid_share([convert("3")], TOOL_SCHEMAS) == 0.0
    assert arguments_exact_match([("f", '{"flag": true}')], [("f", '{"flag": 1}')]) == 0.0  # JSON's true is not 1


def test_the_wrong_function_scores_nothing_even_with_valid_arguments():
    reference = [("calculator", '{"expression": "2 + 2"}')]
    predicted = [convert(2)]
    assert call_accuracy(reference, predicted) == 0.0
    assert arguments_exact_match(reference, predicted) == 0.0
    assert argument_accuracy(reference, predicted) == 0.0
    assert schema_valid_share(predicted, TOOL_SCHEMAS) == 1.0  # a valid call, of the wrong tool


def test_no_call_rows_measure_correctly_not_calling():
    assert call_accuracy([], []) == 1.0 and arguments_exact_match([], []) == 1.0
    assert argument_accuracy([], []) is None and schema_valid_share([], TOOL_SCHEMAS) is None
    assert call_accuracy([], [convert(1)]) == 0.0 and arguments_exact_match([], [convert(1)]) == 0.0
    assert call_accuracy([convert(1)], []) == 0.0 and argument_accuracy([convert(1)], []) == 0.0


def test_invalid_json_counts_as_not_parsing():
    reference = [("calculator", '{"expression": "1 + 1"}')]
    broken = [("calculator", '{"expression": "1 + 1"'), ("calculator", "expression=1+1")]
    assert call_accuracy(reference, broken[:1]) == 1.0  # the right function, called badly
    assert arguments_exact_match(reference, broken[:1]) == 0.0 and argument_accuracy(reference, broken[:1]) == 0.0
    assert schema_valid_share(broken + [("calculator", '{"expression": "1 + 1"}')], TOOL_SCHEMAS) == pytest.approx(1 / 3)
    assert schema_valid_share([("weather", "{}")], TOOL_SCHEMAS) == 0.0  # no such tool
    assert schema_valid_share([("calculator", "[1, 2]")], TOOL_SCHEMAS) == 0.0  # JSON, not an object


def test_calls_are_matched_as_a_multiset():
    reference = [lookup("Zentrix Robotics"), lookup("Aldermoor Foods")]
    assert call_accuracy(reference, reference[:1]) == 0.0 and argument_accuracy(reference, reference[:1]) == 0.5
    assert call_accuracy(reference[:1], reference[:1] * 2) == 0.0  # called twice
    assert argument_accuracy(reference[:1], reference[:1] * 2) == 1.0
    assert arguments_exact_match(reference[:1], reference[:1] * 2) == 0.0


def test_argument_accuracy_pairs_calls_for_the_most_matches_not_greedily():
    """Greedy pairing takes r1-p1 (3 matches) and leaves r2-p2 (0): 3 of 8; the best pairing is 4 of 8."""
    r1, r2 = {"a": 1, "b": 1, "c": 1, "d": 1}, {"a": 7, "b": 7, "c": 1, "d": 9}
    p1, p2 = {"a": 1, "b": 1, "c": 1, "d": 9}, {"a": 1, "b": 1, "c": 8, "d": 8}
    reference = [("f", json.dumps(r1)), ("f", json.dumps(r2))]
    assert argument_accuracy(reference, [("f", json.dumps(p1)), ("f", json.dumps(p2))]) == 0.5


def test_predicted_calls_may_be_tool_call_objects_and_references_messages():
    message = Message("assistant", "", tool_calls=(ToolCall("call_1", "calculator", '{"expression": "2 * 3"}'),))
    assert reference_calls(message) == [("calculator", '{"expression": "2 * 3"}')]
    openai_message = {"role": "assistant", "tool_calls": [{"id": "c", "type": "function", "function":
                                                          {"name": "calculator", "arguments": {"expression": "2 * 3"}}}]}
    assert json.loads(reference_calls(openai_message)[0][1]) == {"expression": "2 * 3"}
    assert call_accuracy(reference_calls(message), openai_message["tool_calls"]) == 1.0
    assert arguments_exact_match(reference_calls(message), [{"name": "calculator", "arguments": '{"expression": "2 * 3"}'}]) == 1.0
    score = score_turn(message, [ToolCall("x", "calculator", '{"expression":"2 * 3"}')], TOOL_SCHEMAS)
    assert score == TurnScore(calls_right=True, arguments_exact=True, arguments_matched=1, arguments_total=1,
                              calls_valid=1, calls_predicted=1)


def _perturbed(calls: list[tuple[str, str]], rng: random.Random) -> list[tuple[str, str]]:
    """A prediction a model might make from the reference: dropped, duplicated, renamed, broken, changed."""
    predicted = list(calls)
    for _ in range(rng.randint(0, 3)):
        if not predicted:
            predicted.append(convert(rng.randint(1, 9)))
            continue
        index = rng.randrange(len(predicted))
        name, arguments = predicted[index]
        change = rng.choice(["drop", "duplicate", "rename", "break", "value"])
        if change == "drop":
            predicted.pop(index)
        elif change == "duplicate":
            predicted.append(predicted[index])
        elif change == "rename":
            predicted[index] = (rng.choice(["calculator", "convert_units", "company_lookup"]), arguments)
        elif change == "break":
            predicted[index] = (name, arguments[:-1])
        elif arguments.endswith("}"):  # not broken already
            values = json.loads(arguments)
            key = rng.choice(sorted(values))
            predicted[index] = (name, json.dumps(values | {key: 7}))
    return predicted


def test_scores_keep_their_invariants_on_many_perturbed_predictions():
    rng = random.Random(5)
    for row in tool_tasks()["test"]:
        for turn in reference_turns(row):
            reference = reference_calls(turn.reference)
            predicted = _perturbed(reference, rng)
            score = score_turn(turn.reference, predicted, row["tools"])
            shuffled = rng.sample(predicted, len(predicted))
            assert score_turn(turn.reference, shuffled, row["tools"]) == score  # order never matters
            assert score_turn(turn.reference, reference, row["tools"]).arguments_exact  # the reference is right
            assert score.arguments_exact <= score.calls_right
            if score.arguments_exact:
                assert score.arguments_matched == score.arguments_total and score.calls_valid == score.calls_predicted
            assert 0 <= score.arguments_matched <= score.arguments_total == sum(len(json.loads(a)) for _, a in reference)
            assert 0 <= score.calls_valid <= score.calls_predicted == len(predicted)


def test_reference_turns_give_each_assistant_turn_with_the_conversation_before_it():
    row = next(row for row in tool_tasks()["test"] if row["task"] == "revenue_difference")
    turns = reference_turns(row)
    assert [len(reference_calls(turn.reference)) for turn in turns] == [2, 1, 0]
    assert [turn.final for turn in turns] == [False, False, True]
    assert turns[0].messages[-1]["role"] == "user" and turns[1].messages[-1]["role"] == "tool"
    assert turns[2].messages == row["messages"][:-1]


def test_summaries_and_intervals_over_rows():
    right = TurnScore(True, True, 2, 2, 1, 1)
    half = TurnScore(True, False, 1, 2, 0, 1)
    no_call = TurnScore(True, True, 0, 0, 0, 0)
    wrong = TurnScore(False, False, 0, 1, 0, 0)
    assert summarize([right, half, no_call, wrong]) == {"call_accuracy": 0.75, "arguments_exact": 0.5,
                                                        "argument_accuracy": 3 / 5, "schema_valid": 0.5}
    assert summarize([no_call])["argument_accuracy"] is None
    base, tuned = [wrong, half, no_call, wrong] * 20, [right, right, no_call, half] * 20
    result = tool_call_intervals({"base": base, "tuned": tuned}, "tuned", resamples=500, seed=3)
    per_row = {name: [float(score.calls_right) for score in scores] for name, scores in (("base", base), ("tuned", tuned))}
    expected = mean_gain_interval(per_row["base"], per_row["tuned"], resamples=500, seed=3)
    gain = result["gains"]["base"]["call_accuracy"]
    assert (gain.estimate, gain.low, gain.high) == pytest.approx((expected.estimate, expected.low, expected.high))
    assert result["systems"]["tuned"]["argument_accuracy"].estimate == pytest.approx(5 / 6)  # (2 + 2 + 0 + 1) / (2 + 2 + 0 + 2)
    assert result["systems"]["base"]["argument_accuracy"].estimate == pytest.approx(1 / 4)
    assert result["gains"]["base"]["argument_accuracy"].low > 0
    silent = tool_call_intervals({"base": [no_call, wrong], "tuned": [right, right]}, "tuned", resamples=50)
    assert silent["systems"]["base"]["schema_valid"] is None and silent["gains"]["base"]["schema_valid"] is None
    with pytest.raises(ValueError, match="same rows"):
        tool_call_intervals({"base": base, "tuned": tuned[:-1]}, "tuned")


# ------------------------------------------------------------------------------------ end to end

def _replay(row, *, change=None):
    """A scripted model that answers as the row's reference does, turn by turn; `change(turn, text, calls)`
    alters a turn."""
    turns = [m for m in row["messages"] if m["role"] == "assistant"]
    seen = []

    def respond(messages, tools):
        assert tools == row["tools"]
        seen.append(messages)
        turn = sum(m["role"] == "assistant" for m in messages)
        reference = turns[min(turn, len(turns) - 1)]
        text, calls = reference.get("content") or "", reference_calls(reference)
        return change(turn, text, calls) if change else (text, calls)

    respond.seen = seen
    return respond


def test_a_model_that_answers_as_the_reference_does_is_right_on_every_row():
    rows = tool_tasks()["test"]
    results = score_rows(rows, _replay_by_row(rows))
    assert all(result.right for result in results)
    two_rounds = next(i for i, row in enumerate(rows) if row["task"] == "convert_then_add")
    transcript = results[two_rounds].messages
    assert [m["role"] for m in transcript[-5:]] == ["assistant", "tool", "assistant", "tool", "assistant"]
    for message in transcript:  # the loop ran each call for real
        for call in message.get("tool_calls", []):
            result = next(m for m in transcript if m.get("tool_call_id") == call["id"])
            assert result["content"] == run_tool(call["function"]["name"], call["function"]["arguments"])


def _replay_by_row(rows):
    by_question = {next(m["content"] for m in row["messages"] if m["role"] == "user"): _replay(row) for row in rows}

    def respond(messages, tools):
        return by_question[next(m["content"] for m in messages if m["role"] == "user")](messages, tools)
    return respond


def test_the_answer_must_come_from_the_real_tool_results():
    """A model that reads the figure off the tool's result is right; the loop hands it the real result."""
    row = next(row for row in tool_tasks()["test"] if row["task"] == "calculator")

    def reader(messages, tools):
        if messages[-1]["role"] != "tool":
            return "", reference_calls(next(m for m in row["messages"] if m.get("tool_calls")))
        return f"It is {json.loads(messages[-1]['content'])['result']}.", []

    assert run_row(row, reader).right


def test_calling_the_wrong_tool_is_wrong_even_with_the_right_answer():
    row = next(row for row in tool_tasks()["test"] if row["task"] == "calculator")

    def wrong_tool(turn, text, calls):
        return (text, [convert(1)] if calls else calls)

    result = run_row(row, _replay(row, change=wrong_tool))
    assert not result.right and not result.calls_right and result.answer_right
    assert result.calls == (convert(1),)


def test_a_final_answer_with_the_wrong_figure_is_wrong():
    row = next(row for row in tool_tasks()["test"] if row["task"] == "revenue_difference")
    figure = reference_answer(row)[0]

    def wrong_figure(turn, text, calls):
        return (text.replace(figure, str(float(figure) + 1)), calls)

    result = run_row(row, _replay(row, change=wrong_figure))
    assert result.calls_right and not result.answer_right and not result.right


def test_no_call_rows_parallel_order_and_the_round_limit():
    rows = tool_tasks()["test"]
    plain = next(row for row in rows if row["task"] == "no_tool")
    assert run_row(plain, _replay(plain)).right
    needless = run_row(plain, _replay(plain, change=lambda turn, text, calls: (text, [convert(1)] if turn == 0 else [])))
    assert needless.answer_right and not needless.calls_right and not needless.right

    parallel = next(row for row in rows if row["task"] == "two_conversions")
    reversed_calls = run_row(parallel, _replay(parallel, change=lambda turn, text, calls: (text, calls[::-1])))
    assert reversed_calls.right

    endless = _replay(parallel, change=lambda turn, text, calls: ("", [convert(turn + 1)]))
    result = run_row(parallel, endless, max_rounds=3)
    assert len(endless.seen) == 4 and len(result.calls) == 3  # 3 rounds of calls run, the 4th ask must answer
    assert not result.answered and not result.right


def test_end_to_end_intervals_and_a_row_without_its_answer():
    rows = tool_tasks()["test"][:40]
    right = score_rows(rows, _replay_by_row(rows))
    wrong = [run_row(row, lambda messages, tools: ("I do not know.", [])) for row in rows]
    result = end_to_end_intervals({"base": wrong, "tuned": right}, "tuned", resamples=200)
    assert result["systems"]["tuned"]["right"].estimate == 1.0 and result["systems"]["base"]["right"].estimate == 0.0
    assert result["gains"]["base"]["right"].low > 0.9
    bare = {key: value for key, value in rows[0].items() if key != "answer"}
    with pytest.raises(ValueError, match="'answer'"):
        reference_answer(bare)


def test_rows_in_lockstep_batches_equal_rows_one_at_a_time():
    """run_rows asks a batch at a time (every row still going); the exchanges and scores are those of
    running each row alone, with a scripted model that errs on some rows."""
    rows = tool_tasks()["test"][:40]
    replay = _replay_by_row(rows)

    def sometimes_wrong(messages, tools):
        text, calls = replay(messages, tools)
        question = next(m["content"] for m in messages if m["role"] == "user")
        return (text, [convert(2)] if calls and len(question) % 3 == 0 else calls)

    batches = []

    def respond_all(asks):
        batches.append(len(asks))
        return [sometimes_wrong(*ask) for ask in asks]

    together = run_rows(rows, respond_all)
    alone = [run_row(row, sometimes_wrong) for row in rows]
    assert together == alone
    assert batches[0] == len(rows) and len(batches) <= 4  # one batch per round, not one call per row
    assert 0 < sum(result.right for result in together) < len(rows)
