"""End-to-end tool use: let a model answer a row's question with the tools running for real, then
score the whole exchange.

The loop: ask the model (`respond(messages, tools) -> (text, tool_calls)`) to continue the row's
opening (system and user messages); while it calls tools, run each call with the real tool
(`run_tool`: an `{"error": ...}` result for a call that cannot run, as a real tool answers), append
the assistant turn and the tool results, and ask again. At most `max_rounds` rounds of calls run;
the ask after the last round must answer. The row is right when the calls are right (the same
functions as the reference's calls over all its turns, each as often, in any order and any split into
rounds) and the final answer states every key figure of the row's `answer` (numbers after rounding to
the figure's decimals, words ignoring case: `data.tool_task.mentions`). Arguments are judged through
the figure: a wrong argument gives a wrong result.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from tunesmith.data.tool_task import mentions, run_tool
from tunesmith.eval.intervals import RESAMPLES, Interval
from tunesmith.eval.tool_calls import (
    Pair,
    PredictedCall,
    as_pairs,
    ratio_intervals,
    reference_calls,
)

# respond(messages in OpenAI's chat format, tools) -> (text, tool calls as (name, arguments JSON) or ToolCall)
Respond = Callable[[list[dict[str, Any]], list[dict[str, Any]]], tuple[str, Sequence[PredictedCall]]]
MAX_ROUNDS = 3
END_TO_END_METRICS = ("right", "calls_right", "answer_right")


@dataclass(frozen=True)
class RowResult:
    """One row answered end to end."""

    right: bool  # calls right and answer right
    calls_right: bool
    answer_right: bool
    answered: bool  # the model ended with a turn that calls nothing, within the rounds allowed
    calls: tuple[Pair, ...]  # every call that ran, in order
    final_text: str
    messages: tuple[dict[str, Any], ...]  # the exchange: the opening, the model's turns, the tool results

    def counts(self) -> dict[str, tuple[int, int]]:
        return {metric: (int(getattr(self, metric)), 1) for metric in END_TO_END_METRICS}


def opening(row: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The row's messages before its first assistant turn: what the model is asked to continue."""
    messages = list(row["messages"])
    first = next((index for index, message in enumerate(messages) if message["role"] == "assistant"), len(messages))
    if not any(message["role"] == "user" for message in messages[:first]):
        raise ValueError("the row has no user message before its first assistant turn; put the question first")
    return copy.deepcopy(messages[:first])


def reference_answer(row: Mapping[str, Any]) -> list[str]:
    """The key figures the final answer must state (the row's `answer`: a string or a list of them)."""
    if "answer" not in row:
        raise ValueError("the row has no 'answer'; add the key figure(s) its final reply must state, "
                         'e.g. "answer": ["26.41"] (tool-tasks rows have one)')
    answer = row["answer"]
    figures = [answer] if isinstance(answer, str) else list(answer)
    if not figures or not all(isinstance(figure, str) and figure.strip() for figure in figures):
        raise ValueError(f"the row's 'answer' is {answer!r}; give a non-empty string or a list of them")
    return figures


Ask = tuple[list[dict[str, Any]], list[dict[str, Any]]]  # (messages, tools): what the model is asked to continue
Answer = tuple[str, Sequence[PredictedCall]]  # (text, tool calls): what it replied


def exchange(row: Mapping[str, Any], *, max_rounds: int = MAX_ROUNDS,
             tool_runner: Callable[[str, str], str] = run_tool) -> Generator[Ask, Answer, RowResult]:
    """One row's exchange as a generator: it yields each ask and is sent the model's answer, and
    returns the scored row. `run_row` drives one; `run_rows` drives many in lockstep, so a model
    answers the asks of every row still going in one batch."""
    messages, tools = opening(row), list(row.get("tools") or [])
    ran: list[Pair] = []
    text, answered = "", False
    for round_number in range(max_rounds + 1):
        text, predicted = yield copy.deepcopy(messages), copy.deepcopy(tools)
        calls = as_pairs(predicted)
        if not calls:
            answered = True
            break
        if round_number == max_rounds:
            break  # calls after the last round do not run: the model never answered
        tool_calls = [{"id": f"call_{round_number}_{number}", "type": "function",
                       "function": {"name": name, "arguments": arguments}} for number, (name, arguments) in enumerate(calls)]
        messages.append({"role": "assistant", "content": text, "tool_calls": tool_calls})
        messages += [{"role": "tool", "tool_call_id": call["id"], "content": tool_runner(name, arguments)}
                     for call, (name, arguments) in zip(tool_calls, calls)]
        ran += calls
    if answered:
        messages.append({"role": "assistant", "content": text})
    expected = Counter(name for message in row["messages"] if message["role"] == "assistant"
                       for name, _ in reference_calls(message))
    calls_right = Counter(name for name, _ in ran) == expected
    answer_right = answered and all(mentions(text, figure) for figure in reference_answer(row))
    return RowResult(calls_right and answer_right, calls_right, answer_right, answered, tuple(ran),
                     text if answered else "", tuple(messages))


def run_row(row: Mapping[str, Any], respond: Respond, *, max_rounds: int = MAX_ROUNDS,
            tool_runner: Callable[[str, str], str] = run_tool) -> RowResult:
    """Answer one row with the tools running for real, and score it."""
    return run_rows([row], lambda asks: [respond(*ask) for ask in asks], max_rounds=max_rounds,
                    tool_runner=tool_runner)[0]


def run_rows(rows: Sequence[Mapping[str, Any]], respond_all: Callable[[list[Ask]], list[Answer]], *,
             max_rounds: int = MAX_ROUNDS, tool_runner: Callable[[str, str], str] = run_tool) -> list[RowResult]:
    """Every row answered end to end, the rows in lockstep: `respond_all` answers the asks of every
    row still going at once (a batch), round after round."""
    going = {number: exchange(row, max_rounds=max_rounds, tool_runner=tool_runner) for number, row in enumerate(rows)}
    asks = {number: next(steps) for number, steps in going.items()}
    results: dict[int, RowResult] = {}
    while asks:
        numbers = list(asks)
        for number, answer in zip(numbers, respond_all([asks[n] for n in numbers])):
            try:
                asks[number] = going[number].send(answer)
            except StopIteration as done:
                results[number] = done.value
                del asks[number]
    return [results[number] for number in range(len(rows))]


def score_rows(rows: Sequence[Mapping[str, Any]], respond: Respond, *, max_rounds: int = MAX_ROUNDS) -> list[RowResult]:
    """Every row answered end to end, in order."""
    return run_rows(rows, lambda asks: [respond(*ask) for ask in asks], max_rounds=max_rounds)


def end_to_end_intervals(results: Mapping[str, Sequence[RowResult]], tuned: str | None, *, resamples: int = RESAMPLES,
                         seed: int = 0) -> dict[str, dict[str, dict[str, Interval | None]]]:
    """The share of rows right (and of rows with the right calls, with the right answer) of every system,
    and the gain of `tuned` over each other, with paired bootstrap intervals."""
    counts = {name: {metric: np.array([result.counts()[metric] for result in rows], dtype=np.float64).reshape(-1, 2)
                     for metric in END_TO_END_METRICS} for name, rows in results.items()}
    return ratio_intervals(counts, tuned, resamples=resamples, seed=seed)
